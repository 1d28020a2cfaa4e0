"""Draw the pose-rendering golden images with the original DWPose drawing code, for tests/test_pose_render.py.

Run in the reference environment of requirements-golden.txt (with controlnet_aux installed --no-deps: it ships
DWPose's util.py, and its dependencies are not needed), never from the tests:

    python tools/golden_pose.py

The drawing functions come from `controlnet_aux/dwpose/util.py` (DWPose's `annotator/dwpose/util.py`, the file
Moore-AnimateAnyone and MusePose also copy), loaded from the installed package by file path and run unmodified;
only `draw_pose`'s three calls (in `controlnet_aux/dwpose/__init__.py`, which imports torch and the whole package)
are repeated here. The known skeleton is written as OpenPose JSON by hand, independently of `aa.poses.keypoints`.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 320, 448  # canvas the skeleton's pixel coordinates refer to


def load_dwpose_util() -> tuple[ModuleType, Path]:
    """controlnet_aux's dwpose/util.py as a standalone module (it imports only math, numpy, cv2, matplotlib)."""
    spec = importlib.util.find_spec("controlnet_aux")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("controlnet_aux is not installed: pip install --no-deps controlnet_aux==0.0.10")
    path = Path(list(spec.submodule_search_locations)[0]) / "dwpose" / "util.py"
    util_spec = importlib.util.spec_from_file_location("dwpose_util", path)
    module = importlib.util.module_from_spec(util_spec)
    util_spec.loader.exec_module(module)
    return module, path


def known_skeleton() -> dict[str, np.ndarray]:
    """A standing figure with one arm raised, both hands and a face; coordinates on a 1/8 px grid (exact in
    float32 and in 3-decimal JSON). Includes a missing point, points under the 0.3 threshold and one point in
    column 0 (which DWPose's renderer skips)."""
    body = np.array([
        [160.375, 80.5, 0.95], [160.125, 130.25, 0.93], [120.5, 132.625, 0.9], [92.25, 185.75, 0.88],
        [70.625, 230.125, 0.86], [200.875, 128.375, 0.91], [236.5, 170.25, 0.87], [262.125, 120.875, 0.85],
        [135.25, 250.5, 0.8], [128.75, 320.125, 0.78], [122.375, 395.5, 0.75], [185.625, 250.25, 0.8],
        [205.125, 318.875, 0.74], [230.5, 390.375, 0.25],  # left ankle under threshold: hidden with its limb
        [150.5, 72.25, 0.9], [170.25, 72.125, 0.9], [0.0, 0.0, 0.0], [182.375, 78.5, 0.7],  # right ear missing
    ])

    def hand(wrist: tuple[float, float], direction: float) -> np.ndarray:
        points = [[*wrist, 0.9]]
        for finger in range(5):
            spread = np.deg2rad(-40 + 20 * finger) + direction
            for joint in range(1, 5):
                r = 7.0 + 6.5 * joint - (3.0 if finger in (0, 4) else 0.0)
                x, y = wrist[0] + r * np.cos(spread), wrist[1] + r * np.sin(spread)
                points.append([np.round(x * 8) / 8, np.round(y * 8) / 8, 0.8])
        return np.array(points)

    left = hand((262.125, 118.875), -np.pi / 2)  # raised hand, fingers up
    right = hand((70.625, 232.125), np.pi / 2 + 0.3)  # lowered hand, fingers down
    left[8, 2] = 0.2  # index tip under threshold: hidden with its edge
    right[20] = [0.0, 0.0, 0.0]  # little finger tip missing

    angles = np.linspace(np.pi * 0.95, np.pi * 0.05, 17)
    jaw = np.stack([160 + 22 * np.cos(angles), 88 + 26 * np.sin(angles) - 8], 1)
    i = np.arange(5.0)
    brows = np.concatenate([np.stack([143 + 3.5 * i, 66 - i % 3], 1), np.stack([163 + 3.5 * i, 66 - (4 - i) % 3], 1)])
    nose = np.array([[160, 72], [160, 76], [160, 80], [160, 84], [154, 88], [157, 89], [160, 90], [163, 89],
                     [166, 88]], float)
    eye = np.array([[-6, 0], [-3, -2], [0, -2], [3, 0], [0, 2], [-3, 2]], float)
    eyes = np.concatenate([eye + [150, 74], eye + [170, 74]])
    outer, inner = np.linspace(np.pi, -np.pi, 12, endpoint=False), np.linspace(np.pi, -np.pi, 8, endpoint=False)
    mouth = np.concatenate([np.stack([160 + 9 * np.cos(outer), 98 + 4 * np.sin(outer)], 1),
                            np.stack([160 + 6 * np.cos(inner), 98 + 2 * np.sin(inner)], 1)])
    face_xy = np.round(np.concatenate([jaw, brows, nose, eyes, mouth]) * 8) / 8
    face = np.concatenate([face_xy, np.full((68, 1), 0.85)], 1)
    face[0, 2] = 0.1  # under threshold: hidden
    face[1] = [0.0, 45.5, 0.9]  # column 0: DWPose's `x > eps` test on integer pixels skips it
    return {"body": body, "left_hand": left, "right_hand": right, "face": face}


def to_openpose_json(parts: dict[str, np.ndarray]) -> dict:
    """One frame in the OpenPose JSON layout, inside the one-file-per-video wrapper {"frames": [...]}."""
    keys = {"body": "pose_keypoints_2d", "left_hand": "hand_left_keypoints_2d",
            "right_hand": "hand_right_keypoints_2d", "face": "face_keypoints_2d"}
    person = {keys[k]: [round(float(v), 3) for v in a.reshape(-1)] for k, a in parts.items()}
    return {"frames": [{"version": 1.3, "canvas_width": WIDTH, "canvas_height": HEIGHT, "people": [person]}]}


def dwpose_inputs(parts: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Normalised candidate/subset/hands/faces as DWposeDetector builds them: body points with score > 0.3 are
    indexed in `subset`, hand and face points with score < 0.3 are set to -1."""
    scale = np.array([WIDTH, HEIGHT], np.float64)
    body = parts["body"]
    candidate = body[:, :2] / scale
    subset = np.array([[float(i) if s > 0.3 else -1.0 for i, s in enumerate(body[:, 2])]])

    def hidden(points: np.ndarray) -> np.ndarray:
        xy = points[:, :2] / scale
        xy[points[:, 2] < 0.3] = -1
        return xy

    hands = np.stack([hidden(parts["left_hand"]), hidden(parts["right_hand"])])
    faces = hidden(parts["face"])[None]
    return candidate, subset, hands, faces


def draw(util: ModuleType, parts: dict[str, np.ndarray], width: int, height: int, hands: bool, face: bool
         ) -> np.ndarray:
    """DWPose `draw_pose` at width x height, optionally without hands or face."""
    candidate, subset, hand_peaks, face_points = dwpose_inputs(parts)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas = util.draw_bodypose(canvas, candidate, subset)
    if hands:
        canvas = util.draw_handpose(canvas, hand_peaks)
    if face:
        canvas = util.draw_facepose(canvas, face_points)
    return canvas


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data",
                        help="folder for pose_golden.json and the pose_golden_*.png images")
    args = parser.parse_args()
    util, util_path = load_dwpose_util()
    import cv2  # noqa: F401  (only to report the version that rasterised the goldens)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    parts = known_skeleton()
    write_atomic(args.out_dir / "pose_golden.json", json.dumps(to_openpose_json(parts), indent=1).encode())
    # The renders read back the JSON's rounded numbers, exactly as the test does.
    frame = json.loads((args.out_dir / "pose_golden.json").read_text())["frames"][0]["people"][0]
    sizes = {"body": 18, "left_hand": 21, "right_hand": 21, "face": 68}
    keys = {"body": "pose_keypoints_2d", "left_hand": "hand_left_keypoints_2d",
            "right_hand": "hand_right_keypoints_2d", "face": "face_keypoints_2d"}
    parts = {k: np.array(frame[keys[k]], np.float64).reshape(n, 3) for k, n in sizes.items()}
    renders = {
        "pose_golden_full.png": (WIDTH, HEIGHT, True, True),  # the skeleton's own canvas, everything drawn
        "pose_golden_body_256x384.png": (256, 384, False, False),  # another size and aspect, body only
        "pose_golden_hands_480x672.png": (480, 672, True, False),  # 1.5x, face left out
    }
    for name, (w, h, hands, face) in renders.items():
        image = draw(util, parts, w, h, hands, face)
        tmp = args.out_dir / (name + ".tmp.png")
        Image.fromarray(image).save(tmp)
        os.replace(tmp, args.out_dir / name)
        print(f"{name}: {w}x{h}, {int((image.sum(-1) > 0).sum())} lit pixels")
    print(f"drawn by {util_path} with OpenCV {cv2.__version__}")


if __name__ == "__main__":
    main()
