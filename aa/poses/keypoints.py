"""Pose keypoints in the OpenPose layout and their JSON format.

Body: OpenPose-18 (COCO order with a neck at index 1), hands: 21 points each, face: 68 points.
Every point is (x, y, confidence) in pixels of the image the pose was taken from; confidence 0 means missing.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aa.io.image import natural_key

BODY_POINTS, HAND_POINTS, FACE_POINTS = 18, 21, 68
BODY_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)


def _missing(n: int) -> np.ndarray:
    return np.zeros((n, 3), np.float32)


@dataclass
class Pose:
    """One person in one frame: (n, 3) arrays of x, y, confidence in pixels of a `width` x `height` image."""

    width: int
    height: int
    body: np.ndarray = field(default_factory=lambda: _missing(BODY_POINTS))
    left_hand: np.ndarray = field(default_factory=lambda: _missing(HAND_POINTS))
    right_hand: np.ndarray = field(default_factory=lambda: _missing(HAND_POINTS))
    face: np.ndarray = field(default_factory=lambda: _missing(FACE_POINTS))

    def __post_init__(self) -> None:
        for name, n in (("body", BODY_POINTS), ("left_hand", HAND_POINTS), ("right_hand", HAND_POINTS),
                        ("face", FACE_POINTS)):
            a = np.asarray(getattr(self, name), dtype=np.float32)
            if a.shape != (n, 3):
                raise ValueError(f"Pose.{name}: expected shape ({n}, 3) of x, y, confidence, got {a.shape}")
            setattr(self, name, a)


_JSON_FIELDS = (("body", "pose_keypoints_2d"), ("left_hand", "hand_left_keypoints_2d"),
                ("right_hand", "hand_right_keypoints_2d"), ("face", "face_keypoints_2d"))


def pose_to_openpose(pose: Pose) -> dict:
    """One frame in the OpenPose JSON layout (`people[].pose_keypoints_2d`, ...), plus the canvas size."""
    person = {key: [round(float(v), 3) for v in getattr(pose, name).reshape(-1)] for name, key in _JSON_FIELDS}
    return {"version": 1.3, "canvas_width": pose.width, "canvas_height": pose.height, "people": [person]}


# OpenPose's own layouts that we map onto ours: {JSON key: {points in the file: the file's points we keep}}
OPENPOSE_LAYOUTS = {
    # the default BODY_25 model: drop MidHip (8) and the six foot points (19-24)
    "pose_keypoints_2d": {25: (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)},
    # OpenPose's 70 face points are the 68 of iBUG (ours, DWPose's) plus the two pupils
    "face_keypoints_2d": {70: tuple(range(68))},
}


def _keypoints(person: dict, key: str, n: int) -> np.ndarray:
    """One `*_keypoints_2d` list of a person as (n, 3); missing or empty gives all-missing points."""
    values = person.get(key) or []
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in values):
        raise ValueError(f"'{key}' must be a list of numbers (x, y, c per point)")
    other = OPENPOSE_LAYOUTS.get(key, {})
    if len(values) in (3 * k for k in other):
        return _finite(np.asarray(values, np.float32).reshape(-1, 3)[list(other[len(values) // 3])])
    if len(values) not in (0, 3 * n):
        expected = " or ".join(str(3 * k) for k in (n, *other))
        raise ValueError(f"'{key}' has {len(values)} numbers, expected {expected}: x, y, c per point")
    return _finite(np.asarray(values, np.float32).reshape(n, 3)) if values else _missing(n)


def _finite(points: np.ndarray) -> np.ndarray:
    """(n, 3) with every point that has a NaN or infinite number (Python's json reads NaN and Infinity) made
    missing, as OpenPose writes a missing point: 0, 0, confidence 0."""
    points[~np.isfinite(points).all(1)] = 0
    return points


def pose_from_openpose(frame: dict, width: int | None = None, height: int | None = None, *,
                       unknown_canvas: bool = False) -> Pose:
    """Inverse of `pose_to_openpose`, and OpenPose's own `--write_json` frames (COCO-18 or BODY_25 body, 70-point
    face; no canvas size: pass width and height, or `unknown_canvas=True` for a 0 x 0 canvas that the caller places,
    e.g. by aa.poses.fit.keypoint_box); the first person of the frame (no person: no points). Points with NaN or
    infinite numbers are missing."""
    if not isinstance(frame, dict):
        raise ValueError(f"an OpenPose frame is a JSON object with 'people', got {type(frame).__name__}")
    try:
        width = int(frame.get("canvas_width", width or 0))
        height = int(frame.get("canvas_height", height or 0))
    except (TypeError, ValueError):
        raise ValueError("canvas_width/canvas_height must be integers") from None
    if (width <= 0 or height <= 0) and not (unknown_canvas and width == height == 0):
        raise ValueError("OpenPose frame has no canvas_width/canvas_height: pass width and height")
    people = frame.get("people", [])
    if not isinstance(people, list) or not all(isinstance(p, dict) for p in people):
        raise ValueError("'people' must be a list of objects (one per person)")
    person = people[0] if people else {}
    parts = {name: _keypoints(person, key, {"body": BODY_POINTS, "face": FACE_POINTS}.get(name, HAND_POINTS))
             for name, key in _JSON_FIELDS}
    return Pose(width, height, **parts)


def save_json(path: str | os.PathLike, poses: list[Pose]) -> None:
    """Write a pose sequence as one JSON file: {"frames": [openpose frame, ...]} (atomic)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"frames": [pose_to_openpose(p) for p in poses]}))
    os.replace(tmp, path)


def keypoint_files(path: str | os.PathLike) -> list[Path]:
    """The JSON files of a pose sequence: the file itself, or a folder's .json files in natural name order
    (frame_2 before frame_10, as image folders are read: aa.io.image.natural_key)."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    files = sorted(path.glob("*.json"), key=lambda f: natural_key(f.name))
    if not files:
        raise FileNotFoundError(f"{path}: no .json keypoint files in this folder")
    return files


def load_json(path: str | os.PathLike, width: int | None = None, height: int | None = None, *,
              unknown_canvas: bool = False) -> list[Pose]:
    """Read a pose sequence: one file per video ({"frames": [...]} or a bare list of frames), one OpenPose file (a
    single frame), or a folder of per-frame OpenPose files (`keypoint_files`: natural name order). `width` x
    `height` is the canvas of frames that don't record one (OpenPose's own); without them such frames are an error,
    or get a 0 x 0 canvas with `unknown_canvas=True`. Any malformed structure is a ValueError naming the file."""
    path = Path(path)
    if path.is_dir():
        return [p for f in keypoint_files(path) for p in load_json(f, width, height, unknown_canvas=unknown_canvas)]
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: not a readable keypoints JSON file ({e})") from None
    frames = data.get("frames", [data]) if isinstance(data, dict) else data
    if not isinstance(frames, list) or not frames:
        got = f"'frames': {json.dumps(frames)[:40]}" if isinstance(data, dict) else json.dumps(data)[:40]
        raise ValueError(f"{path}: expected {{\"frames\": [OpenPose frame, ...]}} or one OpenPose frame "
                         f"{{\"people\": [...]}}, got {got}")
    poses = []
    for i, frame in enumerate(frames):
        try:
            poses.append(pose_from_openpose(frame, width, height, unknown_canvas=unknown_canvas))
        except ValueError as e:
            raise ValueError(f"{path}: frame {i}: {e}") from None
    return poses


def save_json_frames(folder: str | os.PathLike, poses: list[Pose], prefix: str = "frame") -> list[Path]:
    """Write one OpenPose JSON file per frame, named as OpenPose names them (`{prefix}_000000000000_keypoints.json`,
    each written atomically); `load_json(folder)` reads them back in order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, pose in enumerate(poses):
        path = folder / f"{prefix}_{i:012d}_keypoints.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(pose_to_openpose(pose)))
        os.replace(tmp, path)
        paths.append(path)
    return paths
