"""Training data (aa/training/data.py): manifests in both layouts, frame choice, one crop for everything, CLIP input
as at inference, and unreadable videos skipped. Small synthetic videos from aa/synthetic, 32x32 samples."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from aa.io.video import VideoError, read_video, video_info, write_video
from aa.models.clip import preprocess
from aa.poses.keypoints import Pose, load_json
from aa.poses.render import render_pose
from aa.sampling.pipeline import Settings
from aa.synthetic import write_dataset
from aa.training.data import (
    DataConfig,
    Entry,
    PoseVideoDataset,
    crop_box,
    crop_pose,
    crop_resize,
    frame_indices,
    read_manifest,
    read_manifests,
)

SIZE = 32
CLIP = 28  # the tiny image encoder's input size


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """Two 8-frame 64x64 training clips with keypoints (ours) and their rendered pose videos (released layout)."""
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, 64, 64, train_characters=2, val_characters=1, test_characters=1, clips_per_character=1,
                  frames=8, progress=False)
    released = []
    for item in json.loads((root / "train.json").read_text()):
        info = video_info(root / item["video"])
        poses = load_json(root / item["keypoints"], info.width, info.height)
        kps = item["video"].replace(".mp4", "_kps.mp4")
        write_video(root / kps, [render_pose(p, hands=True, face=False) for p in poses], 8, lossless=True)
        released.append({"video_path": item["video"], "kps_path": kps})
    (root / "released.json").write_text(json.dumps(released))
    return root


def test_manifest_layouts(synth, tmp_path):
    """Both layouts parse, paths taken from the manifest's folder; an entry of neither layout is refused by number."""
    ours, released = read_manifest(synth / "train.json"), read_manifest(synth / "released.json")
    assert [e.video for e in ours] == [e.video for e in released]
    assert ours[0] == Entry(synth / "train/c0000_walk_0.mp4", keypoints=synth / "train/c0000_walk_0.json")
    assert released[0].pose_video == synth / "train/c0000_walk_0_kps.mp4" and released[0].keypoints is None
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"video": "a.mp4", "keypoints": "a.json"}, {"video": "b.mp4"}]))
    with pytest.raises(ValueError, match="entry 1"):
        read_manifest(bad)


def test_several_manifests_read_as_one(synth, tmp_path):
    """read_manifests: one path as read_manifest; several in order, each relative to its own folder; none refused."""
    other = tmp_path / "more"
    other.mkdir()
    (other / "extra.json").write_text(json.dumps([{"video": "x.mp4", "keypoints": "x.json"}]))
    assert read_manifests(synth / "train.json") == read_manifest(synth / "train.json")
    both = read_manifests([synth / "train.json", str(other / "extra.json")])
    assert both == read_manifest(synth / "train.json") + [Entry(other / "x.mp4", keypoints=other / "x.json")]
    with pytest.raises(ValueError, match="no training manifest"):
        read_manifests([])


def test_sample_shapes_ranges_and_determinism(synth):
    """A stage-2 sample: target (f, 3, H, W) in [-1, 1], pose in [0, 1], one reference, the CLIP input; the same
    (index, seed) gives the same sample and another seed another crop."""
    data = PoseVideoDataset(read_manifest(synth / "train.json"), DataConfig(SIZE, SIZE, frames=3, clip_size=CLIP))
    s = data[(0, 7)]
    assert s["target"].shape == s["pose"].shape == (3, 3, SIZE, SIZE)
    assert s["reference"].shape == (3, SIZE, SIZE) and s["clip"].shape == (3, CLIP, CLIP)
    assert s["target"].min() >= -1 and s["target"].max() <= 1 and s["pose"].min() >= 0 and s["pose"].max() <= 1
    assert all(torch.equal(s[k], data[(0, 7)][k]) for k in s)
    assert not torch.equal(s["target"], data[(0, 8)]["target"])


def test_frame_choice_min_distance_and_stride():
    """Stage 1 keeps the reference at least min_ref_distance frames from the target (any frame if the video is too
    short for that); stage 2 takes `frames` frames at `stride`; a video shorter than a clip is refused."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        (t,), ref = frame_indices(rng, 10, DataConfig(frames=1, min_ref_distance=6))
        assert abs(ref - t) >= 6
        (t,), ref = frame_indices(rng, 4, DataConfig(frames=1, min_ref_distance=6))
        assert 0 <= ref < 4
        targets, ref = frame_indices(rng, 20, DataConfig(frames=4, stride=3))
        assert np.all(np.diff(targets) == 3) and 0 <= targets[0] and targets[-1] < 20 and 0 <= ref < 20
    with pytest.raises(VideoError, match="too short"):
        frame_indices(rng, 9, DataConfig(frames=4, stride=3))


def test_target_pose_and_reference_share_one_crop(synth, tmp_path):
    """A static video used as its own pose video (released layout): target, pose and reference come out identical,
    so all three went through the same random crop (which is not the whole frame)."""
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    write_video(tmp_path / "static.mp4", [image] * 6, 8, lossless=True)
    entry = Entry(tmp_path / "static.mp4", pose_video=tmp_path / "static.mp4")
    data = PoseVideoDataset([entry], DataConfig(SIZE, SIZE, frames=2, crop_scale=(0.3, 0.5), clip_size=CLIP))
    s = data[(0, 3)]
    assert torch.equal(s["pose"] * 2 - 1, s["target"])
    assert torch.equal(s["reference"], s["target"][0]) and torch.equal(s["target"][0], s["target"][1])
    whole = torch.from_numpy(crop_resize(image, (0, 0, 64, 48), SIZE, SIZE).copy()).permute(2, 0, 1) / 127.5 - 1
    assert not torch.allclose(s["reference"], whole, atol=0.1)


def test_keypoints_follow_the_crop():
    """crop_pose moves a keypoint where crop_resize moves the pixel under it (within a pixel)."""
    rng, checked = np.random.default_rng(1), 0
    for _ in range(20):
        x, y = rng.uniform(20, 76), rng.uniform(20, 44)
        image = np.zeros((64, 96, 3), np.uint8)
        image[int(y), int(x)] = 255
        box = crop_box(rng, 96, 64, SIZE, SIZE, (0.6, 0.8))
        if not (box[0] + 1 < x < box[0] + box[2] - 1 and box[1] + 1 < y < box[1] + box[3] - 1):
            continue
        body = np.zeros((18, 3), np.float32)
        body[0] = int(x) + 0.5, int(y) + 0.5, 1.0  # the pixel's centre
        moved = crop_pose(Pose(96, 64, body=body), box, SIZE, SIZE).body[0]
        out = crop_resize(image, box, SIZE, SIZE)[..., 0]
        py, px = np.unravel_index(np.argmax(out), out.shape)
        assert abs(px + 0.5 - moved[0]) <= 1.0 and abs(py + 0.5 - moved[1]) <= 1.0
        checked += 1
    assert checked >= 5


def test_released_layout_equals_ours_without_crop(synth):
    """Without a crop, pose videos rendered from the keypoints (released layout) give the same sample as rendering
    the keypoints on the fly (ours)."""
    cfg = DataConfig(64, 64, frames=3, crop_scale=(1.0, 1.0), clip_size=CLIP)
    ours = PoseVideoDataset(read_manifest(synth / "train.json"), cfg)[(1, 5)]
    released = PoseVideoDataset(read_manifest(synth / "released.json"), cfg)[(1, 5)]
    assert released["pose"].amax() > 0.5  # a skeleton was drawn
    assert all(torch.equal(ours[k], released[k]) for k in ours)


def test_clip_input_is_the_inference_preprocessing(synth):
    """The image encoder sees the reference exactly as inference prepares a reference image (Settings.clip_mode)."""
    cfg = DataConfig(64, 64, crop_scale=(1.0, 1.0), clip_size=CLIP)  # the whole 64x64 frame: the reference image
    s = PoseVideoDataset(read_manifest(synth / "train.json"), cfg)[(0, 2)]
    reference = ((s["reference"] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()  # back to the uint8 frame
    torch.testing.assert_close(s["clip"], preprocess(reference, mode=Settings().clip_mode, size=CLIP)[0],
                               rtol=0, atol=0)


def test_unreadable_and_short_videos_are_skipped_with_a_warning(synth, tmp_path, caplog):
    """A corrupt file, a missing one and one too short for a clip are skipped (a warning names each); the sample
    comes from the next readable video."""
    (tmp_path / "corrupt.mp4").write_bytes(b"not a video" * 100)
    write_video(tmp_path / "short.mp4", np.zeros((2, 64, 64, 3), np.uint8), 8, lossless=True)
    good = read_manifest(synth / "train.json")[0]
    entries = [Entry(tmp_path / "corrupt.mp4", keypoints=good.keypoints), Entry(tmp_path / "missing.mp4"),
               Entry(tmp_path / "short.mp4", pose_video=tmp_path / "short.mp4"), good]
    data = PoseVideoDataset(entries, DataConfig(SIZE, SIZE, frames=3, clip_size=CLIP))
    with caplog.at_level(logging.WARNING, logger="aa.training.data"):
        s = data[(0, 4)]
    alone = PoseVideoDataset([good], DataConfig(SIZE, SIZE, frames=3, clip_size=CLIP))[(0, 4)]
    assert all(torch.equal(s[k], alone[k]) for k in s)
    for name in ("corrupt.mp4", "missing.mp4", "short.mp4"):
        assert any(name in r.getMessage() for r in caplog.records), name
    assert data.bad == {0, 1, 2}
    with pytest.raises(RuntimeError, match="no readable video"):
        PoseVideoDataset(entries[:3], DataConfig(SIZE, SIZE, frames=3, clip_size=CLIP))[(0, 0)]


def test_only_the_needed_frames_are_read(synth, monkeypatch):
    """A sample decodes only its target frames and its reference frame (frame-seeking reads, never the whole video)."""
    import aa.training.data
    calls = []

    def spy(path, indices=None):
        calls.append(indices)
        return read_video(path, indices)
    monkeypatch.setattr(aa.training.data, "read_video", spy)
    PoseVideoDataset(read_manifest(synth / "released.json"), DataConfig(SIZE, SIZE, frames=2, clip_size=CLIP))[(0, 1)]
    assert all(indices is not None for indices in calls)
    assert len(calls[0]) == 3 and len(calls[1]) == 2  # video: 2 targets + reference; pose video: the 2 targets
