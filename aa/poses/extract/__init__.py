"""Pose extraction: RGB frames in, one OpenPose-layout Pose per frame out, through an optional backend.

Backends (optional extras: `pip install -r requirements-pose.txt`):
- "mediapipe": MediaPipe Holistic (mediapipe==0.10.14 bundles its models and runs offline), see holistic.py.
- "dwpose": DWPose's ONNX models through onnxruntime, the keypoints the released weights were trained on; the user
  places `yolox_l.onnx` and `dw-ll_ucoco_384.onnx` under `weights/` (or `weights/dwpose/`), see dwpose.py.
Each backend is a callable `frame (h, w, 3) uint8 RGB -> Pose` with a `close()`.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import numpy as np
from tqdm import tqdm

from aa.poses.keypoints import Pose

BACKENDS = ("mediapipe", "dwpose")


def check_frame(frame: np.ndarray, index: int = 0) -> np.ndarray:
    """The frame as a contiguous (h, w, 3) uint8 RGB array, or a ValueError naming what is wrong."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
        raise ValueError(f"frame {index}: expected an (h, w, 3) uint8 RGB array, got shape {frame.shape} "
                         f"dtype {frame.dtype} (convert grey or RGBA images to RGB first)")
    return np.ascontiguousarray(frame)


def load_backend(backend: str = "mediapipe", weights_dir: str | os.PathLike = "weights", *, video: bool = True
                 ) -> Callable[[np.ndarray], Pose]:
    """A pose extractor. ImportError when its optional package is missing, FileNotFoundError when its weights
    are; `video` lets MediaPipe track from frame to frame (DWPose treats every frame alone)."""
    if backend == "mediapipe":
        from aa.poses.extract.holistic import HolisticBackend
        return HolisticBackend(video=video)
    if backend == "dwpose":
        from aa.poses.extract.dwpose import DWPoseBackend
        return DWPoseBackend(weights_dir)
    raise ValueError(f"unknown pose backend {backend!r}: expected one of {BACKENDS}")


def extract_poses(frames: Iterable[np.ndarray], backend: str = "mediapipe", weights_dir: str | os.PathLike = "weights",
                  *, video: bool = True, progress: bool = False, total: int | None = None) -> list[Pose]:
    """One Pose per (h, w, 3) uint8 RGB frame, in pixels of that frame. With MediaPipe a frame where nobody is
    found gives a pose with every point missing; DWPose then reads the whole frame, as DWPose does, and scores
    decide. `progress` shows a progress bar (`total`: the frame count, when known)."""
    extractor = load_backend(backend, weights_dir, video=video)
    try:
        return [extractor(check_frame(f, i))
                for i, f in enumerate(tqdm(frames, total=total, desc=f"poses ({backend})", unit="frame",
                                           disable=not progress))]
    finally:
        extractor.close()
