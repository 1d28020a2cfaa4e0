"""The inputs of sample.py as its flags describe them (its --jobs lines and the web app read them the same way): the
pose sequence (keypoints JSON, OpenPose's per-frame folders, a driving video to extract keypoints from, or rendered
pose images), the reference's own keypoints for --align, and the reference and the poses placed on the output canvas
by --fit (aa/poses/fit.py). Every bad input is a ValueError naming the flag, raised before any weights load where
it can be."""
from __future__ import annotations

import argparse
import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np

from aa.io.video import read_frames_folder, read_video, video_info
from aa.poses.fit import (
    MARGIN,
    border_colour,
    box_centre,
    describe,
    fit_box,
    fit_image,
    fit_pose,
    keypoint_box,
    on_own_canvas,
)
from aa.poses.keypoints import Pose, keypoint_files, load_json
from aa.poses.render import THRESHOLD, drawn_points, render_pose
from aa.poses.retarget import retarget


def read_keypoints(args: argparse.Namespace, path: Path, weights: Path) -> tuple[list | None, float | None]:
    """Keypoints from a JSON file or folder, or extracted from a driving video/image folder (--extract, its model
    files under `weights`), placed on their canvas and checked by `place_keypoints`; None if --pose holds rendered
    pose images."""
    if path.suffix.lower() == ".json" or (path.is_dir() and any(path.glob("*.json"))):
        frames = [(f, p) for f in keypoint_files(path) for p in load_json(f, unknown_canvas=True)][:args.frames]
        return place_keypoints(args, path, frames), None
    if args.extract is None:
        return None, None
    if args.pose_size:
        raise ValueError("--pose-size is the canvas of keypoints JSON; --extract takes the video's own size")
    from aa.poses.extract import extract_poses
    if path.is_dir():
        frames, fps = read_frames_folder(path), None
    else:
        info = video_info(path)
        n = min(info.frames, args.frames or info.frames)
        frames, fps = read_video(path, range(n)), info.fps
    poses = extract_poses(frames[:args.frames], args.extract, weights, progress=not args.quiet)
    return place_keypoints(args, path, [(path, p) for p in poses]), fps


def place_keypoints(args: argparse.Namespace, path: Path, frames: list[tuple[Path, Pose]]) -> list[Pose]:
    """The poses on their source canvas: --pose-size, else the size the file records, else (OpenPose's own files)
    the box around all frames' keypoints (aa.poses.fit.keypoint_box). A sequence that would draw nothing in most
    frames (no confident point, or none on the canvas) is a ValueError naming the file and what to pass."""
    poses = [p for _, p in frames]
    if args.pose_size:
        poses = [replace(p, width=args.pose_size[0], height=args.pose_size[1]) for p in poses]
    # what render_pose draws below (the flags in another order than its call: tools/mutants.py finds that by text)
    drawn = [drawn_points(p, face=args.face, hands=not args.no_hands) for p in poses]
    empty = [i for i, d in enumerate(drawn) if len(d) == 0]
    if 2 * len(empty) > len(poses):
        raise ValueError(f"--pose {path}: {len(empty)} of {len(poses)} frames have no keypoint confident enough to "
                         f"draw (confidence > {THRESHOLD}; first: {frames[empty[0]][0].name}), so the video would "
                         "show no character: pass keypoints in which the person was detected")
    if any(p.width <= 0 or p.height <= 0 for p in poses):
        box = keypoint_box(drawn)
        if not args.quiet:
            print(f"--pose {path}: no canvas size recorded (OpenPose's own files): the box around all frames' "
                  f"keypoints plus a {MARGIN:.0%} margin is fitted into the output (--fit {args.fit}); pass "
                  "--pose-size WxH, the source video's size, to keep its framing instead")
        return on_own_canvas(poses, box)
    off = [i for i, (p, d) in enumerate(zip(poses, drawn)) if len(d) and not (
        (d[:, 0] >= 0) & (d[:, 0] < p.width) & (d[:, 1] >= 0) & (d[:, 1] < p.height)).any()]
    if 2 * (len(empty) + len(off)) > len(poses) and off:
        p, d = poses[off[0]], drawn[off[0]]
        given = "--pose-size" if args.pose_size else "the file's canvas_width/canvas_height"
        raise ValueError(f"--pose {path}: in {len(off) + len(empty)} of {len(poses)} frames no keypoint lies on the "
                         f"{p.width}x{p.height} canvas ({given}; first: {frames[off[0]][0].name}, points up to x "
                         f"{d[:, 0].max():.0f}, y {d[:, 1].max():.0f}): pass --pose-size WxH, the size of the video "
                         "the keypoints were taken from")
    return poses


def read_ref_pose(args: argparse.Namespace, reference: np.ndarray, keypoints: list | None,
                  weights: Path) -> Pose | None:
    """The reference's keypoints for --align (None without it): --ref-pose, in --ref's pixels unless the file
    records its canvas; else extracted from --ref with --extract's backend (MediaPipe by default, its model files
    under `weights`), which must be installed. Decided before the weights load."""
    if not args.align:
        return None
    if keypoints is None:
        raise ValueError("--align needs keypoints: pass --pose as keypoints JSON, or --extract a driving video")
    if args.ref_pose:
        if not args.quiet:
            print(f"--align {args.align}: the reference's keypoints from --ref-pose {args.ref_pose} (no extraction)")
        return load_json(args.ref_pose, reference.shape[1], reference.shape[0])[0]
    backend = args.extract or "mediapipe"
    if backend_missing(backend):
        raise ValueError(f"--align needs the reference's keypoints: pass --ref-pose (a keypoints JSON of --ref, e.g. "
                         f"from tools/extract_pose.py or OpenPose), or install the {backend} backend to extract them "
                         "from --ref (pip install -r requirements-pose.txt; MediaPipe needs Python <= 3.12)")
    from aa.poses.extract import extract_poses
    return extract_poses([reference], backend, weights, video=False)[0]


def backend_missing(backend: str) -> bool:
    """The extraction backend's package is not installed (found without importing it: MediaPipe takes seconds)."""
    return importlib.util.find_spec({"mediapipe": "mediapipe", "dwpose": "onnxruntime"}[backend]) is None


def load_poses(args: argparse.Namespace, path: Path, width: int, height: int, keypoints: list | None,
               fps: float | None, ref_pose: Pose | None) -> tuple[np.ndarray, float | None, str | None]:
    """Pose images (f, height, width, 3) uint8, the driving video's fps (if any), and what --fit did to them (None:
    nothing): rendered from keypoints (from `read_keypoints`, retargeted onto `ref_pose` with --align), or read
    from a pose video or image folder; placed on the output by --fit (aa.poses.fit), as the reference is."""
    if keypoints is not None:
        if ref_pose is not None:
            keypoints = retarget(keypoints, ref_pose, method=args.align)
        # crop keeps the person in view: the reference's keypoints when aligned to them, else the driving ones'
        focus = box_centre([drawn_points(p) for p in ([ref_pose] if ref_pose is not None else keypoints)])
        fits = {}
        for p in keypoints:
            canvas = (p.width, p.height)
            if canvas not in fits:
                fits[canvas] = fit_box((0, 0, *canvas), width, height, args.fit, focus)
        images = np.stack([render_pose(fit_pose(p, fits[(p.width, p.height)]), width, height,
                                       hands=not args.no_hands, face=args.face) for p in keypoints])
        canvas, fit = next(iter(fits.items()))  # the first pose's (one canvas, unless files differ)
        same = canvas == (width, height) and fit.identity
        return images, fps, None if same else f"poses {canvas[0]}x{canvas[1]} {describe(fit, canvas, args.fit)}"
    if path.is_dir():
        images = read_frames_folder(path)[:args.frames]
    else:
        info = video_info(path)
        fps = info.fps
        images = read_video(path, range(min(info.frames, args.frames or info.frames)))
    if len(images) == 0:
        raise ValueError(f"--pose {path}: no frames")
    canvas = (images.shape[2], images.shape[1])
    if canvas == (width, height):
        return images, fps, None
    fit = fit_box((0, 0, *canvas), width, height, args.fit)
    images = np.stack([fit_image(im, fit) for im in images])  # black bars: the pose images' own background
    return images, fps, f"pose images {canvas[0]}x{canvas[1]} {describe(fit, canvas, args.fit)}"


def fit_reference(args: argparse.Namespace, reference: np.ndarray, width: int, height: int,
                  ref_pose: Pose | None) -> tuple[np.ndarray, str | None]:
    """The reference (h, w, 3) on the output canvas by --fit, padded with its own border colour (letterbox) or
    cropped around its keypoints when known; and what was done (None: nothing)."""
    h, w = reference.shape[:2]
    focus = None
    if ref_pose is not None:  # its keypoints, from the ref pose's canvas to the image's pixels
        centre = box_centre([drawn_points(ref_pose)])
        focus = None if centre is None else (centre[0] * w / ref_pose.width, centre[1] * h / ref_pose.height)
    fit = fit_box((0, 0, w, h), width, height, args.fit, focus)
    if (w, h) == (width, height):
        return reference, None
    return fit_image(reference, fit, border_colour(reference)), f"reference {w}x{h} {describe(fit, (w, h), args.fit)}"
