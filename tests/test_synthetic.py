"""Synthetic characters (aa/synthetic): deterministic, keypoints exact and on the figure, honest splits."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aa.io.video import read_video, video_info
from aa.poses.keypoints import BODY_NAMES, load_json
from aa.synthetic import (
    HELD_OUT_MOTIONS,
    MOTIONS,
    TRAIN_MOTIONS,
    PoseState,
    character_seed,
    make_clip,
    plan_splits,
    pose_figure,
    reference,
    render_frame,
    sample_character,
    sample_params,
)
from aa.synthetic.__main__ import main
from aa.synthetic.canvas import Canvas, background, supersampling

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--size", "64", "--train-characters", "2", "--val-characters", "1", "--test-characters", "1",
        "--clips-per-character", "1", "--frames", "6", "--quiet"]


def _backdrop(ch, width, height):
    """The character's background alone, at output resolution."""
    ss = supersampling(width, height)
    return Canvas(background(ch.background, width, height, ss), ss).image()


def test_same_seed_same_clip():
    """A character and a clip are functions of their seeds: equal seeds, equal pixels and keypoints."""
    a, b = sample_character(7), sample_character(7)
    assert a == b and a != sample_character(8)
    va, pa = make_clip(a, "dance", 4, 64, 64, seed=3)
    vb, pb = make_clip(b, "dance", 4, 64, 64, seed=3)
    assert np.array_equal(va, vb)
    assert all(np.array_equal(x.body, y.body) and np.array_equal(x.face, y.face) for x, y in zip(pa, pb))


@pytest.mark.parametrize("size", [(64, 64), (128, 96)])
def test_visible_keypoints_lie_on_the_drawn_figure(size):
    """Every keypoint with confidence 1 (body, hands, face) sits on a pixel that differs from the bare background."""
    width, height = size
    for c, motion in enumerate(MOTIONS):
        ch = sample_character(character_seed(1, c))
        frames, poses = make_clip(ch, motion, 3, width, height, seed=c)
        empty = _backdrop(ch, width, height).astype(int)
        for frame, pose in zip(frames, poses):
            for part in ("body", "left_hand", "right_hand", "face"):
                for x, y, conf in getattr(pose, part):
                    if conf > 0:
                        i, j = int(round(y)), int(round(x))
                        assert np.abs(frame[i, j].astype(int) - empty[i, j]).sum() > 0, (motion, part, x, y)


def test_neutral_reference_shows_every_body_point():
    """The reference pose faces the camera: all 18 body points and the whole face are visible, in the frame."""
    for c in range(6):
        image, pose = reference(sample_character(character_seed(0, c)), 64, 64)
        assert image.shape == (64, 64, 3)
        assert pose.body[:, 2].tolist() == [1.0] * 18, [n for n, p in zip(BODY_NAMES, pose.body) if p[2] == 0]
        assert pose.face[:, 2].min() == 1.0
        assert (pose.body[:, :2] >= 0).all() and (pose.body[:, :2] < 64).all()


def test_back_view_hides_the_face_and_swaps_sides():
    """Turned away (yaw = pi): nose, eyes and all 68 face points get confidence 0, and the person's right
    shoulder appears on the image's right, the reverse of the front view."""
    ch = sample_character(3)
    _, front = render_frame(ch, PoseState(yaw=0.0), 96, 96)
    _, back = render_frame(ch, PoseState(yaw=np.pi), 96, 96)
    nose, r_eye, l_eye, r_sh, l_sh = (BODY_NAMES.index(n) for n in
                                      ("nose", "right_eye", "left_eye", "right_shoulder", "left_shoulder"))
    assert back.body[[nose, r_eye, l_eye], 2].tolist() == [0, 0, 0]
    assert back.face[:, 2].max() == 0 and front.face[:, 2].min() == 1
    assert front.body[r_sh, 0] < front.body[l_sh, 0] and back.body[r_sh, 0] > back.body[l_sh, 0]


def test_turning_narrows_the_body():
    """In profile (yaw = pi/2) both shoulders project to nearly the same x."""
    ch = sample_character(4)
    front = pose_figure(ch, PoseState(yaw=0.0), 128, 128).points
    side = pose_figure(ch, PoseState(yaw=np.pi / 2), 128, 128).points
    width = lambda p: abs(p["right_shoulder"][0] - p["left_shoulder"][0])  # noqa: E731
    assert width(side) < 0.05 * width(front)


@pytest.mark.parametrize("motion", list(MOTIONS))
def test_motions_are_smooth(motion):
    """Joints move continuously: the largest per-frame jump is bounded at 8 fps and shrinks with the time step."""
    ch = sample_character(5)

    for seed in range(2):
        params = sample_params(motion, np.random.default_rng(seed), 3.0)
        figs = [pose_figure(ch, MOTIONS[motion](i / 64, params), 100, 100) for i in range(3 * 64)]
        pts = np.stack([np.stack([f.points[n][:2] for n in BODY_NAMES if n in f.points]
                                 + [f.head_points[n][:2] for n in f.head_points]) for f in figs]) / figs[0].scale
        jump_64fps = np.abs(np.diff(pts, axis=0)).max()  # in figure heights
        jump_8fps = np.abs(np.diff(pts[::8], axis=0)).max()
        assert jump_8fps < 0.25 and jump_64fps < 0.04, (motion, seed, jump_8fps, jump_64fps)


def test_splits_hold_out_characters_and_motions():
    """val and test_chars use characters never seen in train (and not each other's); test_motions uses only the
    held-out motions, on train characters; no other split contains a held-out motion."""
    plan = plan_splits(train_characters=6, val_characters=2, test_characters=3, clips_per_character=4)
    chars = {split: {c.character for c in clips} for split, clips in plan.items()}
    motions = {split: {c.motion for c in clips} for split, clips in plan.items()}
    assert not chars["train"] & chars["val"] and not chars["train"] & chars["test_chars"]
    assert not chars["val"] & chars["test_chars"]
    assert motions["test_motions"] == set(HELD_OUT_MOTIONS) and chars["test_motions"] <= chars["train"]
    for split in ("train", "val", "test_chars"):
        assert motions[split] <= set(TRAIN_MOTIONS)
    assert motions["train"] == set(TRAIN_MOTIONS)


def test_cli_writes_readable_videos_with_matching_keypoints(tmp_path):
    """`python -m aa.synthetic` writes manifests whose videos decode to as many frames as their keypoints,
    plus a reference PNG and keypoints per character; and it does exactly the work asked: the clips plan_splits
    plans for the given counts, each of the given size and length, the characters they use, no other video."""
    subprocess.run([sys.executable, "-m", "aa.synthetic", "--out", str(tmp_path), *TINY], cwd=ROOT, check=True)
    plan = plan_splits(train_characters=2, val_characters=1, test_characters=1, clips_per_character=1)
    listed = []
    for split in ("train", "val", "test_chars", "test_motions"):
        entries = json.loads((tmp_path / f"{split}.json").read_text())
        assert entries and [e["video"] for e in entries] == [f"{split}/{c.name}.mp4" for c in plan[split]]
        listed += [e["video"] for e in entries]
        for e in entries:
            poses = load_json(tmp_path / e["keypoints"])
            frames = read_video(tmp_path / e["video"])
            assert frames.shape == (6, 64, 64, 3) and len(poses) == 6 == video_info(tmp_path / e["video"]).frames
            assert (tmp_path / e["reference"]).is_file()
            assert (tmp_path / "characters" / f"{e['character']:04d}.json").is_file()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.mp4")) == sorted(listed)
    used = {c.character for clips in plan.values() for c in clips}
    assert sorted(p.name for p in (tmp_path / "characters").iterdir()) == sorted(
        f"{c:04d}.{ext}" for c in used for ext in ("png", "json"))


def test_dataset_bytes_are_deterministic(tmp_path):
    """Same arguments, same bytes: every file of two runs is identical."""
    for run in ("a", "b"):
        main(["--out", str(tmp_path / run), *TINY])
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) > 10
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


@pytest.mark.parametrize("size", [(96, 64), (48, 112), (512, 512)])
def test_any_frame_size(size):
    """Square, landscape, portrait and large frames all render with the figure inside the frame."""
    width, height = size
    image, pose = reference(sample_character(11), width, height)
    assert image.shape == (height, width, 3)
    assert pose.width == width and pose.height == height
    assert pose.body[:, 2].min() == 1.0


def test_raw_clip_dataset_holds_the_same_frames(tmp_path):
    """--video-format npz writes raw clips that read back as exactly the frames the lossless .mp4 of the same
    arguments decodes to; every other file is byte-identical and the manifests differ only in the clip suffix."""
    main(["--out", str(tmp_path / "mp4"), *TINY])
    main(["--out", str(tmp_path / "npz"), *TINY, "--video-format", "npz"])
    for split in ("train", "val", "test_chars", "test_motions"):
        a = json.loads((tmp_path / "mp4" / f"{split}.json").read_text())
        b = json.loads((tmp_path / "npz" / f"{split}.json").read_text())
        assert [{**e, "video": e["video"].removesuffix(".mp4") + ".npz"} for e in a] == b
        for ea, eb in zip(a, b):
            mp4, npz = tmp_path / "mp4" / ea["video"], tmp_path / "npz" / eb["video"]
            assert np.array_equal(read_video(mp4), read_video(npz))
            assert video_info(mp4) == video_info(npz)
    manifests = {f"{split}.json" for split in ("train", "val", "test_chars", "test_motions")}
    others = sorted(p.relative_to(tmp_path / "mp4") for p in (tmp_path / "mp4").rglob("*")
                    if p.is_file() and p.suffix != ".mp4" and p.name not in manifests)
    assert len(others) > 10
    for f in others:
        assert (tmp_path / "mp4" / f).read_bytes() == (tmp_path / "npz" / f).read_bytes(), f
