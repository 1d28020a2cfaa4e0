"""Real OpenPose output from a video of any size reaches the output with the character on it: per-frame JSON files
written exactly as OpenPose 1.3 writes them (BODY_25 with the points it missed as 0, 0, 0; 70 face points; empty
hand arrays; no canvas size), from 1920x1080 and 640x480 videos. The skeleton is drawn where the documented rule
puts it (--pose-size: the video's framing, letterboxed; without it: the box around the keypoints), and a sequence
that would draw nothing is an error before the weights load, never a blank video.

`pipeline.animate_iter` is replaced by a recorder (as in test_sample_flags.py): these tests check the pose images
sample.py hands the pipeline.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sample
from aa.models import config
from aa.models.bundle import Models
from aa.poses.keypoints import Pose, save_json
from aa.poses.render import BODY_COLORS, LIMB_DIM, LIMBS
from aa.sampling import load as loading
from aa.sampling import pipeline
from aa.weights.native import save_models

S = 64  # output size
# A close-up in a 1920x1080 frame: head to hips, 9 of BODY_25's 25 points found (nose, neck, shoulders, hips, eyes,
# right ear); the arms, MidHip, legs, feet and left ear missed. BODY_25 index: (x, y).
CLOSEUP = {0: (960, 250), 1: (960, 420), 2: (700, 470), 5: (1220, 470), 9: (800, 1050), 12: (1120, 1050),
           15: (925, 215), 16: (995, 215), 17: (880, 230)}
NECK_TO_RIGHT_HIP = LIMBS.index((1, 8))  # in our 18-point order BODY_25's RHip (9) is 8


def openpose_file(path: Path, width: int, height: int, shift: float = 0.0, people: bool = True) -> dict[int, tuple]:
    """Write one frame as OpenPose 1.3's --write_json does (no canvas size, hands off: empty arrays), the close-up
    scaled to a `height`-tall frame, centred in `width`, moved right by `shift` px; returns the body points drawn."""
    s = height / 1080
    body = {i: (width / 2 + (x - 960) * s + shift, y * s) for i, (x, y) in CLOSEUP.items()}
    pose25 = np.zeros((25, 3))
    for i, (x, y) in body.items():
        pose25[i] = [x, y, 0.85]
    angles = np.linspace(0, 2 * np.pi, 70, endpoint=False)
    face = np.stack([body[0][0] + 80 * s * np.cos(angles), body[0][1] + 110 * s * np.sin(angles),
                     np.full(70, 0.7)], 1)
    person = {"person_id": [-1], "pose_keypoints_2d": pose25.round(3).reshape(-1).tolist(),
              "face_keypoints_2d": face.round(3).reshape(-1).tolist(), "hand_left_keypoints_2d": [],
              "hand_right_keypoints_2d": [], "pose_keypoints_3d": [], "face_keypoints_3d": [],
              "hand_left_keypoints_3d": [], "hand_right_keypoints_3d": []}
    path.write_text(json.dumps({"version": 1.3, "people": [person] if people else []}))
    return body


def openpose_folder(folder: Path, width: int, height: int, frames: int = 4, empty: int = 0) -> list[dict]:
    """`frames` per-frame files named as OpenPose names them (the first `empty` with nobody found)."""
    folder.mkdir()
    return [openpose_file(folder / f"video_{i:012d}_keypoints.json", width, height, shift=6.0 * i,
                          people=i >= empty) for i in range(frames)]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("openpose")
    torch.manual_seed(0)
    save_models(Models.build(config.tiny()), root / "native", {"prediction": "v", "width": S, "height": S})
    Image.fromarray(np.full((96, 96, 3), 200, np.uint8)).save(root / "ref.png")  # the demo's reference size
    return root


@pytest.fixture
def pipeline_call(monkeypatch) -> dict:
    got: dict = {}

    def fake(models, reference, poses, settings, **kwargs):
        got.update(poses=np.asarray(poses), **kwargs)
        return iter([np.zeros((len(poses), kwargs["height"], kwargs["width"], 3), np.uint8)])

    monkeypatch.setattr(pipeline, "animate_iter", fake)
    return got


def run(weights: Path, tmp_path: Path, pose: Path, *flags: str) -> int:
    return sample.main(["--weights", str(weights / "native"), "--ref", str(weights / "ref.png"), "--pose", str(pose),
                        "--out", str(tmp_path / "out.mp4"), "--quiet", *flags])


def assert_limb_at(image: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """The neck -> right hip limb's pixels (its colour, dimmed as drawn) lie along the segment a-b and cover its
    middle, and the neck and hip joints (undimmed discs) are centred on a and b: the skeleton is where the mapped
    keypoints say."""
    for index, xy in ((1, a), (8, b)):  # our 18-point order: neck 1, right hip 8
        ys, xs = np.nonzero((image == BODY_COLORS[index]).all(-1))
        assert len(xs), f"joint {index} not drawn"
        np.testing.assert_allclose([xs.mean() + 0.5, ys.mean() + 0.5], xy, atol=1.0)  # drawn at int(x), int(y)
    colour = np.array(BODY_COLORS[NECK_TO_RIGHT_HIP]) * LIMB_DIM
    ys, xs = np.nonzero((np.abs(image.astype(float) - colour) <= 1).all(-1))
    assert len(xs) > 10, "neck-to-hip limb not drawn"
    p = np.stack([xs + 0.5, ys + 0.5], 1)
    t = np.clip(((p - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
    distance = np.linalg.norm(p - (a + t[:, None] * (b - a)), axis=1)
    assert distance.max() <= 5.5, distance.max()  # half the stick width (4) plus rounding
    middle = np.floor((a + b) / 2).astype(int)
    window = image[middle[1] - 1:middle[1] + 2, middle[0] - 1:middle[0] + 2].astype(float)
    assert (np.abs(window - colour) <= 1).all(-1).any(), "limb misses its middle"


@pytest.mark.parametrize("width, height", [(1920, 1080), (640, 480)])
def test_pose_size_keeps_the_video_framing(weights, tmp_path, pipeline_call, width, height):
    """--pose-size WxH: the video's frame letterboxed into 64x64 (scale 64/W, bars top and bottom), and the
    neck-to-hip limb drawn on the segment between the mapped neck and right hip in every frame."""
    bodies = openpose_folder(tmp_path / "op", width, height)
    assert run(weights, tmp_path, tmp_path / "op", "--pose-size", f"{width}x{height}") == 0
    poses = pipeline_call["poses"]
    assert poses.shape == (4, S, S, 3)
    s = min(S / width, S / height)
    bar = (S - height * s) / 2
    for image, body in zip(poses, bodies):
        neck, hip = (np.array([body[i][0] * s, body[i][1] * s + bar]) for i in (1, 9))
        assert_limb_at(image, neck, hip)
        assert image[:int(bar) - 1].max() == 0  # nothing in the bars (missing points are not drawn at 0, 0)


@pytest.mark.parametrize("width, height", [(1920, 1080), (640, 480)])
def test_without_a_size_the_keypoints_box_fills_the_output(weights, tmp_path, pipeline_call, capsys, width, height):
    """No --pose-size (OpenPose records none): the box around all frames' drawn keypoints plus a 10% margin is
    letterboxed into 64x64 (said in one line); the skeleton is where that rule puts it and fills most of the
    height. Before, the canvas was taken from the 96x96 reference and every pose image was black."""
    bodies = openpose_folder(tmp_path / "op", width, height)
    assert sample.main(["--weights", str(weights / "native"), "--ref", str(weights / "ref.png"), "--pose",
                        str(tmp_path / "op"), "--out", str(tmp_path / "out.mp4")]) == 0
    assert "no canvas size recorded" in capsys.readouterr().out
    points = np.array([xy for body in bodies for xy in body.values()])
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    pad = 0.1 * max(x1 - x0, y1 - y0)
    box_w, box_h = x1 - x0 + 2 * pad, y1 - y0 + 2 * pad
    s = min(S / box_w, S / box_h)
    shift = np.array([(S - s * box_w) / 2 - s * (x0 - pad), (S - s * box_h) / 2 - s * (y0 - pad)])
    poses = pipeline_call["poses"]
    for image, body in zip(poses, bodies):
        neck, hip = (s * np.array(body[i]) + shift for i in (1, 9))
        assert_limb_at(image, neck, hip)
        ys = np.nonzero(image.max((1, 2)))[0]
        assert ys.max() - ys.min() >= 0.7 * S


@pytest.mark.parametrize("case", ["canvas too small", "recorded canvas too small", "nobody found"])
def test_a_sequence_that_draws_nothing_is_an_error(weights, tmp_path, capsys, monkeypatch, case):
    """Keypoints that would give a blank video stop before the weights load with one `error:` line naming the
    file and what to pass: every point off the canvas given (--pose-size) or recorded, or most frames with no
    one found. No output is written."""
    monkeypatch.setattr(loading, "load_for_sampling", lambda **kw: pytest.fail("weights loaded"))
    flags = []
    if case == "canvas too small":
        openpose_folder(tmp_path / "op", 1920, 1080)
        pose, flags = tmp_path / "op", ["--pose-size", "96x96"]
    elif case == "recorded canvas too small":
        body = np.zeros((18, 3), np.float32)
        body[[0, 1, 2, 5, 8, 11]] = [[960, 250, 1], [960, 420, 1], [700, 470, 1], [1220, 470, 1], [800, 1050, 1],
                                     [1120, 1050, 1]]
        pose = tmp_path / "kps.json"
        save_json(pose, [Pose(96, 96, body=body)] * 3)
    else:
        openpose_folder(tmp_path / "op", 1920, 1080, empty=3)
        pose = tmp_path / "op"
    code = run(weights, tmp_path, pose, *flags)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert str(pose) in err
    assert ("--pose-size" if case != "nobody found" else "no keypoint confident enough") in err, err
    assert not (tmp_path / "out.mp4").exists()


def test_align_with_ref_pose_needs_no_mediapipe(weights, tmp_path, pipeline_call, capsys, monkeypatch):
    """--align global with --ref-pose works with MediaPipe absent and says where the reference's keypoints came
    from; without --ref-pose it is one error, before the weights load, that says to pass --ref-pose."""
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # as if not installed (e.g. Python 3.13)
    openpose_folder(tmp_path / "op", 1920, 1080)
    body = np.zeros((18, 3), np.float32)
    body[[0, 1, 2, 5, 8, 11]] = [[48, 20, 1], [48, 30, 1], [38, 30, 1], [58, 30, 1], [42, 60, 1], [54, 60, 1]]
    save_json(tmp_path / "ref_pose.json", [Pose(96, 96, body=body)])
    assert sample.main(["--weights", str(weights / "native"), "--ref", str(weights / "ref.png"), "--pose",
                        str(tmp_path / "op"), "--align", "global", "--ref-pose", str(tmp_path / "ref_pose.json"),
                        "--out", str(tmp_path / "out.mp4")]) == 0
    assert "--ref-pose" in capsys.readouterr().out
    assert pipeline_call["poses"].max() > 0
    monkeypatch.setattr(loading, "load_for_sampling", lambda **kw: pytest.fail("weights loaded"))
    assert run(weights, tmp_path, tmp_path / "op", "--align", "global") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--ref-pose" in err and err.count("\n") == 1, err
