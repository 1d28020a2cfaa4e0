"""Training data: videos with their pose sequences, sampled as (target frames, poses, reference frame) (paper 3.3).

Two manifest layouts, both a JSON list with paths relative to the manifest's folder (or absolute):
    ours:      {"video": "x.mp4", "keypoints": "x.json"}   keypoints rendered on the fly after the crop, so the
                                                           augmentation moves the skeleton exactly
    released:  {"video_path": "x.mp4", "kps_path": "x_kps.mp4"}   Moore-AnimateAnyone's: a pose video per video
Only the frames a sample needs are decoded. Every random choice of a sample comes from a generator seeded by the
sample's global position, so a run is the same on any number of processes and after a resume.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from aa.io.video import VideoError, read_video, video_info
from aa.models.clip import preprocess
from aa.poses.keypoints import Pose, load_json
from aa.poses.render import render_pose
from aa.training.augment import random_colour_transform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One training video and its poses: `keypoints` (our JSON) or `pose_video` (released layout)."""

    video: Path
    keypoints: Path | None = None
    pose_video: Path | None = None


def read_manifest(path: str | os.PathLike) -> list[Entry]:
    """Parse a manifest in either layout; relative paths are taken from the manifest's folder."""
    path = Path(path)
    try:
        items = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: not a readable JSON manifest ({e})") from None
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: a manifest is a non-empty JSON list of videos")
    root = path.parent
    entries = []
    for i, item in enumerate(items):
        keys = next((k for k in (("video", "keypoints"), ("video_path", "kps_path"))
                     if isinstance(item, dict) and all(isinstance(item.get(key), str) and item[key] for key in k)),
                    None)
        if keys is None:
            raise ValueError(f"{path}: entry {i} is not an object with the paths video+keypoints or "
                             f"video_path+kps_path: {json.dumps(item)[:80]}")
        if keys[0] == "video":
            entries.append(Entry(root / item["video"], keypoints=root / item["keypoints"]))
        else:
            entries.append(Entry(root / item["video_path"], pose_video=root / item["kps_path"]))
    return entries


def read_manifests(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Entry]:
    """One manifest or several (their videos in order, e.g. a dataset and extra training characters)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("no training manifest given")
    return [entry for path in paths for entry in read_manifest(path)]


@dataclass(frozen=True)
class DataConfig:
    """How samples are cut from the videos."""

    width: int = 512
    height: int = 512
    frames: int = 1  # 1: stage 1 (one target frame); N: stage 2 clips
    stride: int = 1  # frame step inside a clip
    min_ref_distance: int = 0  # stage 1: |target - reference| >= this many frames (when the video allows)
    crop_scale: tuple[float, float] = (0.8, 1.0)  # area of the random crop, as a fraction of the largest one
    clip_mode: str = "squash"  # CLIP preprocessing, as at inference
    clip_size: int = 224
    hands: bool = True  # render hand keypoints
    face: bool = False  # render face keypoints (they over-constrain faces)
    colour_augment: float = 0.0  # probability of one random colour transform for all of a sample's frames


def crop_box(rng: np.random.Generator, src_w: int, src_h: int, out_w: int, out_h: int,
             scale: tuple[float, float]) -> tuple[float, float, float, float]:
    """A random box (x0, y0, w, h) with the output's aspect ratio, covering `scale` of the largest such box."""
    aspect = out_w / out_h
    full_w = min(src_w, src_h * aspect)
    s = np.sqrt(rng.uniform(*scale))
    w, h = full_w * s, full_w * s / aspect
    return float(rng.uniform(0, src_w - w)), float(rng.uniform(0, src_h - h)), w, h


def crop_resize(frame: np.ndarray, box: tuple[float, float, float, float], width: int, height: int) -> np.ndarray:
    x0, y0, w, h = box
    image = Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR, box=(x0, y0, x0 + w, y0 + h))
    return np.asarray(image)


def crop_pose(pose: Pose, box: tuple[float, float, float, float], width: int, height: int) -> Pose:
    """The same crop and resize applied to keypoints (missing points stay missing)."""
    x0, y0, w, h = box
    parts = {}
    for name in ("body", "left_hand", "right_hand", "face"):
        p = getattr(pose, name).copy()
        p[:, 0] = (p[:, 0] - x0) * width / w
        p[:, 1] = (p[:, 1] - y0) * height / h
        parts[name] = p
    return Pose(width, height, **parts)


def frame_indices(rng: np.random.Generator, count: int, cfg: DataConfig) -> tuple[list[int], int]:
    """Target frames (a clip of cfg.frames at cfg.stride) and a reference frame from the same video; in stage 1 the
    two are at least cfg.min_ref_distance apart whenever the video is long enough for that."""
    span = (cfg.frames - 1) * cfg.stride + 1
    if count < span:
        raise VideoError(f"too short: {count} frames, a sample needs {span}")
    d = cfg.min_ref_distance
    if cfg.frames == 1 and 0 < d < count:  # targets with a frame d away: the first count - d and the last count - d
        target = int(rng.choice([i for i in range(count) if i >= d or i + d < count]))
        return [target], int(rng.choice([i for i in range(count) if abs(i - target) >= d]))
    start = int(rng.integers(0, count - span + 1))
    return list(range(start, start + span, cfg.stride)), int(rng.integers(0, count))


class PoseVideoDataset(torch.utils.data.Dataset):
    """Indexed by (video index, sample seed); returns float tensors:
    target (f, 3, H, W) in [-1, 1], pose (f, 3, H, W) in [0, 1], reference (3, H, W) in [-1, 1],
    clip (3, S, S) normalised for the image encoder. A video that can't be read is skipped with a warning (the
    next video is taken instead)."""

    def __init__(self, entries: list[Entry], cfg: DataConfig) -> None:
        self.entries, self.cfg = entries, cfg
        self.bad: set[int] = set()
        self.poses: dict[int, list[Pose]] = {}  # parsed keypoints per video: parsing is ~20% of a 96x96 sample

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        index, seed = key
        for attempt in range(len(self.entries)):
            i = (index + attempt) % len(self.entries)
            if i in self.bad:
                continue
            try:
                return self.load(i, np.random.default_rng(seed))
            except (VideoError, ValueError, OSError) as e:
                self.bad.add(i)
                log.warning("skipping %s: %s", self.entries[i].video, e)
        raise RuntimeError("no readable video in the dataset")

    def load(self, i: int, rng: np.random.Generator) -> dict[str, Tensor]:
        e, cfg = self.entries[i], self.cfg
        info = video_info(e.video)
        targets, ref = frame_indices(rng, info.frames, cfg)
        frames = read_video(e.video, [*targets, ref])
        box = crop_box(rng, info.width, info.height, cfg.width, cfg.height, cfg.crop_scale)
        if cfg.colour_augment > 0 and rng.uniform() < cfg.colour_augment:  # no draw when off: samples unchanged
            frames = random_colour_transform(rng).apply(frames)  # targets and reference alike (and so CLIP's crop)
        images = np.stack([crop_resize(f, box, cfg.width, cfg.height) for f in frames])
        if e.keypoints is not None:
            if i not in self.poses:  # crop_pose copies, so the cached poses are never changed
                self.poses[i] = load_json(e.keypoints, info.width, info.height)
            poses = self.poses[i]
            if len(poses) != info.frames:
                raise ValueError(f"{e.keypoints}: {len(poses)} poses for {info.frames} frames")
            pose_images = np.stack([render_pose(crop_pose(poses[t], box, cfg.width, cfg.height), cfg.width,
                                                cfg.height, hands=cfg.hands, face=cfg.face) for t in targets])
        else:
            pose_frames = read_video(e.pose_video, targets)
            if video_info(e.pose_video).frames != info.frames:
                raise ValueError(f"{e.pose_video}: frame count differs from {e.video}")
            scale = (pose_frames.shape[2] / info.width, pose_frames.shape[1] / info.height)
            pbox = (box[0] * scale[0], box[1] * scale[1], box[2] * scale[0], box[3] * scale[1])
            pose_images = np.stack([crop_resize(f, pbox, cfg.width, cfg.height) for f in pose_frames])
        to_tensor = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
        ref_crop = crop_resize(frames[-1], box, *_clip_crop_size(box))
        return {
            "target": to_tensor(images[:-1]) * 2 - 1,
            "pose": to_tensor(pose_images),
            "reference": to_tensor(images[-1:])[0] * 2 - 1,
            "clip": preprocess(ref_crop, mode=cfg.clip_mode, size=cfg.clip_size)[0],
        }


def _clip_crop_size(box: tuple[float, float, float, float]) -> tuple[int, int]:
    """The reference crop at its source resolution for the image encoder (at inference it sees the full image)."""
    return max(1, round(box[2])), max(1, round(box[3]))
