"""Keypoint type and OpenPose JSON format (aa/poses/keypoints.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aa.poses.keypoints import Pose, load_json, pose_from_openpose, pose_to_openpose, save_json, save_json_frames

DATA = Path(__file__).parent / "data"


def random_pose(seed: int, width: int = 320, height: int = 448) -> Pose:
    """A pose with random points on a 1/8 px grid and some points missing (confidence 0, coordinates 0)."""
    rng = np.random.default_rng(seed)

    def points(n: int) -> np.ndarray:
        xy = np.round(rng.uniform(0, [width, height], (n, 2)) * 8) / 8
        conf = np.round(rng.uniform(0.05, 1, (n, 1)), 3)
        a = np.concatenate([xy, conf], 1)
        a[rng.random(n) < 0.2] = 0
        return a

    return Pose(width, height, points(18), points(21), points(21), points(68))


def assert_same_pose(a: Pose, b: Pose) -> None:
    assert (a.width, a.height) == (b.width, b.height)
    for part in ("body", "left_hand", "right_hand", "face"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part), err_msg=part)


def test_json_round_trip_one_file_per_video(tmp_path: Path) -> None:
    """save_json then load_json gives back every point of every frame exactly, missing points included."""
    poses = [random_pose(s) for s in range(3)]
    save_json(tmp_path / "poses.json", poses)
    loaded = load_json(tmp_path / "poses.json")
    assert len(loaded) == 3
    for a, b in zip(poses, loaded):
        assert_same_pose(a, b)
    assert not list(tmp_path.glob("*.tmp")), "atomic write leaves no temporary file"


def test_json_round_trip_one_file_per_frame(tmp_path: Path) -> None:
    """One OpenPose file per frame, named as OpenPose names them, reads back in frame order from the folder."""
    poses = [random_pose(s) for s in range(12)]
    paths = save_json_frames(tmp_path / "frames", poses, prefix="dance")
    assert paths[0].name == "dance_000000000000_keypoints.json" and len(paths) == 12
    for a, b in zip(poses, load_json(tmp_path / "frames")):
        assert_same_pose(a, b)


def test_openpose_layout_and_plain_openpose_files(tmp_path: Path) -> None:
    """The JSON uses OpenPose's keys (people[].pose_keypoints_2d, ...: flat x, y, c); a plain OpenPose file with no
    canvas size reads with the size given by the caller, and a frame with nobody in it is a pose with no points."""
    frame = pose_to_openpose(random_pose(0))
    person = frame["people"][0]
    assert set(person) == {"pose_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d",
                           "face_keypoints_2d"}
    assert len(person["pose_keypoints_2d"]) == 18 * 3 and len(person["face_keypoints_2d"]) == 68 * 3
    plain = {"version": 1.3, "people": [{"pose_keypoints_2d": person["pose_keypoints_2d"]}]}
    (tmp_path / "openpose.json").write_text(json.dumps(plain))
    pose = load_json(tmp_path / "openpose.json", width=640, height=480)[0]
    assert (pose.width, pose.height) == (640, 480)
    np.testing.assert_array_equal(pose.body.reshape(-1), np.float32(person["pose_keypoints_2d"]))
    assert not pose.face.any(), "absent parts are all missing"
    with pytest.raises(ValueError, match="canvas_width"):
        load_json(tmp_path / "openpose.json")
    empty = pose_from_openpose({"people": [], "canvas_width": 8, "canvas_height": 8})
    assert not empty.body[:, 2].any()


def test_bad_inputs_give_clear_errors(tmp_path: Path) -> None:
    """Wrong shapes, wrong point counts and unreadable files are reported with what was expected."""
    with pytest.raises(ValueError, match=r"body: expected shape \(18, 3\)"):
        Pose(10, 10, body=np.zeros((17, 3)))
    with pytest.raises(ValueError, match="expected 54"):
        pose_from_openpose({"canvas_width": 8, "canvas_height": 8, "people": [{"pose_keypoints_2d": [0.0] * 10}]})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable keypoints JSON"):
        load_json(tmp_path / "bad.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .json"):
        load_json(tmp_path / "empty")


def test_golden_skeleton_file_reads() -> None:
    """The golden skeleton (written by tools/golden_pose.py without aa.poses.keypoints) loads with its canvas and its
    missing right ear."""
    pose = load_json(DATA / "pose_golden.json")[0]
    assert (pose.width, pose.height) == (320, 448)
    assert pose.body[16, 2] == 0 and pose.body[0, 2] > 0.3
