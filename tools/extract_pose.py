"""Extract poses from a driving video, an image or a folder of frames: keypoints JSON + a rendered pose video.

    python tools/extract_pose.py dance.mp4                                 # MediaPipe Holistic
    python tools/extract_pose.py dance.mp4 --backend dwpose --no-face      # DWPose ONNX files under weights/
    python tools/extract_pose.py frames/ --fps 30 --json-frames out/dance_keypoints/

Writes `<out>/<name>_pose.json` (OpenPose layout, one file for the whole video) and `<out>/<name>_pose.mp4` (the
DWPose-style rendering the Pose Guider expects; a .png for a single image). Backends are optional extras:
`pip install -r requirements-pose.txt`.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aa.io.video import IMAGE_SUFFIXES, VideoError, iter_video, read_frames_folder, read_image, video_info, write_video  # noqa: E402
from aa.poses.extract import BACKENDS, extract_poses  # noqa: E402
from aa.poses.keypoints import save_json, save_json_frames  # noqa: E402
from aa.poses.render import render_pose  # noqa: E402


def open_input(path: Path, fps: float | None) -> tuple[Iterator[np.ndarray], int, float, bool]:
    """(frames, count, fps, is_single_image) for a video file, an image file or a folder of frames."""
    if path.is_dir():
        frames = read_frames_folder(path)
        return iter(frames), len(frames), fps or 25.0, False
    if not path.exists():
        raise SystemExit(f"{path}: no such file or folder")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            return iter([read_image(path)]), 1, fps or 25.0, True
        except VideoError as e:
            raise SystemExit(str(e)) from None
    info = video_info(path)  # also checks that the file is a readable video
    return iter_video(path), info.frames, fps or info.fps or 25.0, False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", type=Path, help="driving video file, image file, or folder of frame images")
    parser.add_argument("--backend", choices=BACKENDS, default="mediapipe",
                        help="pose extractor: MediaPipe Holistic (offline, bundled models) or DWPose (ONNX files "
                             "under --weights-dir; the keypoints the released weights were trained on)")
    parser.add_argument("--weights-dir", type=Path, default=Path("weights"),
                        help="folder holding yolox_l.onnx and dw-ll_ucoco_384.onnx for --backend dwpose")
    parser.add_argument("--out", type=Path, default=Path("out"), help="folder for the outputs")
    parser.add_argument("--json", type=Path, default=None,
                        help="keypoints file (default: <out>/<input name>_pose.json)")
    parser.add_argument("--json-frames", type=Path, default=None,
                        help="also write one OpenPose JSON file per frame into this folder")
    parser.add_argument("--video", type=Path, default=None,
                        help="rendered pose video (default: <out>/<input name>_pose.mp4, .png for an image)")
    parser.add_argument("--no-hands", action="store_true", help="leave the hands out of the rendering")
    parser.add_argument("--no-face", action="store_true",
                        help="leave the face out of the rendering (face points often over-constrain the face)")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of the output video (default: the input video's, 25 for frame folders)")
    parser.add_argument("--images", action="store_true",
                        help="treat the frames as unrelated images (MediaPipe: no tracking between frames)")
    args = parser.parse_args()

    try:
        frames, count, fps, single = open_input(args.input, args.fps)
        poses = extract_poses(frames, args.backend, args.weights_dir, video=not (single or args.images),
                              progress=True, total=count)
    except (ImportError, FileNotFoundError, VideoError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None

    name = args.input.stem if args.input.is_file() else args.input.resolve().name
    json_path = args.json or args.out / f"{name}_pose.json"
    video_path = args.video or args.out / f"{name}_pose{'.png' if single else '.mp4'}"
    for p in (json_path, video_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    save_json(json_path, poses)
    if args.json_frames:
        save_json_frames(args.json_frames, poses, prefix=name)
    found = sum(bool((p.body[:, 2] > 0).any()) for p in poses)
    print(f"{json_path}: {len(poses)} frames, a person found in {found}")

    options = dict(hands=not args.no_hands, face=not args.no_face)
    if video_path.suffix.lower() in IMAGE_SUFFIXES:
        tmp = video_path.with_name(video_path.name + ".tmp" + video_path.suffix)
        Image.fromarray(render_pose(poses[0], **options)).save(tmp)
        tmp.replace(video_path)
    else:
        width, height = poses[0].width // 2 * 2, poses[0].height // 2 * 2  # H.264 (yuv420p) needs even sizes
        write_video(video_path, (render_pose(p, width, height, **options) for p in poses), fps)
    print(f"{video_path}: rendered")


if __name__ == "__main__":
    main()
