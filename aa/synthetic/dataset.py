"""Clips and datasets: characters x motions -> lossless videos, OpenPose keypoints and split manifests.

Layout written by `write_dataset(out, ...)`:

    out/info.json                      arguments, fps, motions of each split
    out/characters/0007.png, .json     each character standing in a neutral pose (a reference image) + keypoints
    out/<split>/c0007_walk_1.mp4       lossless H.264 RGB video (aa.io.video.write_video(lossless=True)), or
                                       c0007_walk_1.npz, the same frames as a raw clip (video_format="npz")
    out/<split>/c0007_walk_1.json      its keypoints, one pose per frame (aa.poses.keypoints.save_json)
    out/<split>/c0007_walk_1.box.json  the character's bounding box in each frame, [[x0, y0, x1, y1], ...] (pixels,
                                       end-exclusive; render.render_frame_box): where region metrics look
    out/<split>/c0007_walk_1.parts.npz what each pixel of each frame shows, (f, h, w) uint8 canvas.PARTS values
                                       (render.render_frame_parts; load_parts): where per-part colour metrics look
    out/<split>.json                   manifest: [{"video", "keypoints", "boxes", "parts", "character", "motion",
                                       "reference"}, ...]

Splits: `train` (train characters, train motions), `val` and `test_chars` (two disjoint sets of held-out
characters, train motions), `test_motions` (train characters, held-out motions only).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from aa.io.video import write_video
from aa.poses.keypoints import Pose, save_json
from aa.synthetic.character import BACKGROUNDS, Character, sample_character
from aa.synthetic.motions import HELD_OUT_MOTIONS, MOTIONS, TRAIN_MOTIONS, sample_params
from aa.synthetic.render import render_frame, render_frame_parts
from aa.synthetic.skeleton import PoseState

FPS = 8.0
VIDEO_FORMATS = ("mp4", "npz")  # lossless H.264, or raw clips (aa.io.video.RAW_SUFFIX)


def character_seed(seed: int, character: int) -> int:
    """The sampling seed of character number `character` in a dataset generated with `seed`."""
    return int(np.random.SeedSequence([seed, character]).generate_state(1)[0])


def make_clip(character: Character, motion: str, frames: int, width: int, height: int, seed: int,
              fps: float = FPS) -> tuple[np.ndarray, list[Pose]]:
    """Render `frames` frames of `motion` with parameters drawn from `seed`: (f, h, w, 3) uint8 and one Pose each."""
    video, poses, _ = make_clip_boxes(character, motion, frames, width, height, seed, fps)
    return video, poses


def make_clip_boxes(character: Character, motion: str, frames: int, width: int, height: int, seed: int,
                    fps: float = FPS) -> tuple[np.ndarray, list[Pose], list[tuple[int, int, int, int]]]:
    """`make_clip` plus the character's bounding box in each frame (`render_frame_box`)."""
    video, poses, boxes, _ = make_clip_parts(character, motion, frames, width, height, seed, fps)
    return video, poses, boxes


def make_clip_parts(character: Character, motion: str, frames: int, width: int, height: int, seed: int,
                    fps: float = FPS) -> tuple[np.ndarray, list[Pose], list[tuple[int, int, int, int]], np.ndarray]:
    """`make_clip_boxes` plus each frame's part labels, (f, h, w) uint8 (`render_frame_parts`)."""
    rng = np.random.default_rng(seed)
    params = sample_params(motion, rng, frames / fps)
    images, poses, boxes, labels = [], [], [], []
    for i in range(frames):
        image, pose, box, label = render_frame_parts(character, MOTIONS[motion](i / fps, params), width, height)
        images.append(image)
        poses.append(pose)
        boxes.append(box)
        labels.append(label)
    return np.stack(images), poses, boxes, np.stack(labels)


def reference(character: Character, width: int, height: int) -> tuple[np.ndarray, Pose]:
    """The character standing still, facing the camera, arms a little out: a reference image."""
    return render_frame(character, PoseState(), width, height)


@dataclass(frozen=True)
class _Clip:
    split: str
    character: int
    motion: str
    index: int

    @property
    def name(self) -> str:
        return f"c{self.character:04d}_{self.motion}_{self.index}"


def plan_splits(train_characters: int, val_characters: int, test_characters: int, clips_per_character: int
                ) -> dict[str, list[_Clip]]:
    """Which character plays which motion in each split (motions cycle so each split covers all of its motions)."""
    val0, test0 = train_characters, train_characters + val_characters
    ranges = {"train": range(0, val0), "val": range(val0, test0), "test_chars": range(test0, test0 + test_characters)}
    plan: dict[str, list[_Clip]] = {}
    for split, chars in ranges.items():
        plan[split] = [_Clip(split, c, TRAIN_MOTIONS[(c * clips_per_character + k) % len(TRAIN_MOTIONS)], k)
                       for c in chars for k in range(clips_per_character)]
    # held-out motions on as many train characters as the test_chars split has characters
    chars = [c % max(train_characters, 1) for c in range(test_characters)] if train_characters else []
    plan["test_motions"] = [_Clip("test_motions", c, HELD_OUT_MOTIONS[(i * clips_per_character + k)
                                                                       % len(HELD_OUT_MOTIONS)], k)
                            for i, c in enumerate(chars) for k in range(clips_per_character)]
    return plan


def _save_png(path: Path, image: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)


def _save_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_parts(path: Path, labels: np.ndarray) -> None:
    """Part labels (f, h, w) uint8 as a compressed .npz (key "labels"), written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, labels=labels)
    os.replace(tmp, path)


def load_parts(path: str | os.PathLike) -> np.ndarray:
    """Part labels written by `save_parts`: (f, h, w) uint8 canvas.PARTS values (canvas.MIXED on edges)."""
    with np.load(path) as data:
        return data["labels"]


def write_dataset(out: str | os.PathLike, width: int = 64, height: int = 64, train_characters: int = 40,
                  val_characters: int = 5, test_characters: int = 8, clips_per_character: int = 3,
                  frames: int = 24, seed: int = 0, fps: float = FPS, progress: bool = True,
                  backgrounds: tuple[str, ...] = BACKGROUNDS, video_format: str = "mp4") -> dict[str, list[dict]]:
    """Generate the whole dataset under `out` (layout in the module docstring); returns the manifests.
    `backgrounds` limits the backdrop kinds (e.g. the plain ones, for a small model); `video_format` "npz" writes raw
    clips (no FFmpeg needed, about ten times larger) with the frames "mp4" would decode to."""
    assert video_format in VIDEO_FORMATS, f"video_format must be one of {VIDEO_FORMATS}, got {video_format!r}"
    out = Path(out)
    plan = plan_splits(train_characters, val_characters, test_characters, clips_per_character)
    (out / "characters").mkdir(parents=True, exist_ok=True)
    characters = sorted({c.character for clips in plan.values() for c in clips})
    cache = {c: sample_character(character_seed(seed, c), backgrounds) for c in characters}
    manifests: dict[str, list[dict]] = {}
    total = len(characters) + sum(len(v) for v in plan.values())
    with tqdm(total=total, desc="synthetic", unit="item", disable=not progress) as bar:
        for c in characters:
            image, pose = reference(cache[c], width, height)
            _save_png(out / "characters" / f"{c:04d}.png", image)
            save_json(out / "characters" / f"{c:04d}.json", [pose])
            bar.update()
        for split_id, (split, clips) in enumerate(plan.items()):
            (out / split).mkdir(exist_ok=True)
            manifests[split] = []
            for clip in clips:
                key = [seed, clip.character, clip.index, split_id]
                clip_seed = int(np.random.SeedSequence(key).generate_state(1)[0])
                video, poses, boxes, labels = make_clip_parts(cache[clip.character], clip.motion, frames, width,
                                                              height, clip_seed, fps)
                write_video(out / split / f"{clip.name}.{video_format}", video, fps, lossless=True)
                save_json(out / split / f"{clip.name}.json", poses)
                _save_text(out / split / f"{clip.name}.box.json", json.dumps([list(b) for b in boxes]))
                save_parts(out / split / f"{clip.name}.parts.npz", labels)
                manifests[split].append({"video": f"{split}/{clip.name}.{video_format}",
                                         "keypoints": f"{split}/{clip.name}.json",
                                         "boxes": f"{split}/{clip.name}.box.json",
                                         "parts": f"{split}/{clip.name}.parts.npz",
                                         "character": clip.character, "motion": clip.motion,
                                         "reference": f"characters/{clip.character:04d}.png"})
                bar.update()
            (out / f"{split}.json").write_text(json.dumps(manifests[split], indent=1))
    info = dict(width=width, height=height, frames=frames, fps=fps, seed=seed, train_characters=train_characters,
                val_characters=val_characters, test_characters=test_characters,
                clips_per_character=clips_per_character, backgrounds=list(backgrounds),
                train_motions=list(TRAIN_MOTIONS), held_out_motions=list(HELD_OUT_MOTIONS),
                characters={str(c): asdict(cache[c]) for c in characters})
    (out / "info.json").write_text(json.dumps(info, indent=1))
    return manifests
