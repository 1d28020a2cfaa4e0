"""Place a source (an image, a pose canvas, or the box around a person's keypoints) on the output canvas: one rule
for the reference image and the poses alike, so the character keeps its proportions in both.

Modes: "letterbox" scales the whole source to fit inside the output and pads the rest (nothing is lost);
"crop" scales it to cover the output and cuts what sticks out, keeping a focus point (the person) in view;
"stretch" scales width and height separately (the proportions change: what resizing to the output size did).
A `Fit` maps source pixels to output pixels, x_out = scale_x * x + shift_x (and the same for y).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from aa.poses.keypoints import Pose

FIT_MODES = ("letterbox", "crop", "stretch")
MARGIN = 0.1  # around the keypoints' box, as a fraction of its larger side: room for the limbs' width and motion


@dataclass(frozen=True)
class Fit:
    """Source pixels -> output pixels: x_out = scale_x * x + shift_x, y_out = scale_y * y + shift_y, on an output
    canvas of `width` x `height`."""

    scale_x: float
    scale_y: float
    shift_x: float
    shift_y: float
    width: int
    height: int

    @property
    def identity(self) -> bool:
        """Moves nothing (the source already is the output's size and shape)."""
        return (self.scale_x, self.scale_y, self.shift_x, self.shift_y) == (1.0, 1.0, 0.0, 0.0)


def fit_box(box: tuple[float, float, float, float], width: int, height: int, mode: str = "letterbox",
            focus: tuple[float, float] | None = None) -> Fit:
    """The Fit that places the source rectangle `box` (x0, y0, w, h) on a width x height output by `mode`.

    letterbox: centred, one scale (the smaller); crop: one scale (the larger), the window centred on `focus` (default
    the box's centre) and kept inside the box; stretch: each axis scaled on its own."""
    if mode not in FIT_MODES:
        raise ValueError(f"unknown fit mode {mode!r}: expected one of {', '.join(FIT_MODES)}")
    x0, y0, w, h = map(float, box)
    if w <= 0 or h <= 0 or width <= 0 or height <= 0:
        raise ValueError(f"fit_box: sizes must be positive, got a {w:g}x{h:g} box for a {width}x{height} output")
    if mode == "stretch":
        sx, sy = width / w, height / h
        return Fit(sx, sy, -sx * x0, -sy * y0, width, height)
    s = min(width / w, height / h) if mode == "letterbox" else max(width / w, height / h)
    if mode == "letterbox":
        return Fit(s, s, (width - s * w) / 2 - s * x0, (height - s * h) / 2 - s * y0, width, height)
    fx, fy = focus if focus is not None else (x0 + w / 2, y0 + h / 2)
    seen_w, seen_h = width / s, height / s  # the part of the source the output shows
    left = min(max(fx - seen_w / 2, x0), x0 + w - seen_w)
    top = min(max(fy - seen_h / 2, y0), y0 + h - seen_h)
    return Fit(s, s, -s * left, -s * top, width, height)


def fit_image(image: np.ndarray, fit: Fit, fill: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """(fit.height, fit.width, 3) uint8: `image` (h, w, 3) uint8 placed by `fit` (Lanczos), `fill` where it leaves
    the output uncovered."""
    h, w = image.shape[:2]
    if fit.identity and (w, h) == (fit.width, fit.height):
        return image
    # the output rectangle the image covers, clipped to the output, and the source rectangle it shows
    left, top = max(fit.shift_x, 0.0), max(fit.shift_y, 0.0)
    right, bottom = min(fit.shift_x + fit.scale_x * w, fit.width), min(fit.shift_y + fit.scale_y * h, fit.height)
    out = Image.new("RGB", (fit.width, fit.height), tuple(int(c) for c in fill))
    dst = (round(left), round(top), round(right), round(bottom))
    if dst[2] > dst[0] and dst[3] > dst[1]:
        src = ((dst[0] - fit.shift_x) / fit.scale_x, (dst[1] - fit.shift_y) / fit.scale_y,
               (dst[2] - fit.shift_x) / fit.scale_x, (dst[3] - fit.shift_y) / fit.scale_y)
        src = (max(src[0], 0.0), max(src[1], 0.0), min(src[2], float(w)), min(src[3], float(h)))
        part = Image.fromarray(image).resize((dst[2] - dst[0], dst[3] - dst[1]), Image.Resampling.LANCZOS, box=src)
        out.paste(part, dst[:2])
    return np.asarray(out)


def border_colour(image: np.ndarray) -> tuple[int, int, int]:
    """The median colour of an (h, w, 3) image's outermost pixels: the background a letterboxed reference is padded
    with, so the padding reads as more of the same backdrop rather than as a frame."""
    edge = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return tuple(int(c) for c in np.median(edge, axis=0))


def fit_pose(pose: Pose, fit: Fit) -> Pose:
    """The pose moved onto the output canvas by `fit`; missing points (confidence 0) stay all zero."""
    def move(points: np.ndarray) -> np.ndarray:
        out = np.zeros_like(points)
        present = points[:, 2] > 0
        out[present, 0] = fit.scale_x * points[present, 0] + fit.shift_x
        out[present, 1] = fit.scale_y * points[present, 1] + fit.shift_y
        out[present, 2] = points[present, 2]
        return out

    if fit.identity and (pose.width, pose.height) == (fit.width, fit.height):
        return pose
    return Pose(fit.width, fit.height, body=move(pose.body), left_hand=move(pose.left_hand),
                right_hand=move(pose.right_hand), face=move(pose.face))


def keypoint_box(points: list[np.ndarray], margin: float = MARGIN) -> tuple[float, float, float, float] | None:
    """(x0, y0, w, h): the box around every frame's (n, 2) points, grown by `margin` x its larger side on each side;
    None when no frame has a point. The rule for keypoints whose canvas size is unknown (OpenPose's own files)."""
    points = [p for p in points if len(p)]
    if not points:
        return None
    every = np.concatenate(points).astype(np.float64)
    (x0, y0), (x1, y1) = every.min(0), every.max(0)
    pad = margin * max(x1 - x0, y1 - y0, 1.0)
    return x0 - pad, y0 - pad, x1 - x0 + 2 * pad, y1 - y0 + 2 * pad


def box_centre(points: list[np.ndarray]) -> tuple[float, float] | None:
    """The centre of the box around every frame's (n, 2) points (where "crop" keeps its window); None without any."""
    box = keypoint_box(points, margin=0.0)
    return None if box is None else (box[0] + box[2] / 2, box[1] + box[3] / 2)


def on_own_canvas(poses: list[Pose], box: tuple[float, float, float, float]) -> list[Pose]:
    """The poses shifted so that `box` becomes their canvas (size rounded up to whole pixels)."""
    x0, y0, w, h = box
    fit = Fit(1.0, 1.0, -x0, -y0, int(np.ceil(w)), int(np.ceil(h)))
    return [fit_pose(p, fit) for p in poses]


def describe(fit: Fit, source: tuple[float, float], mode: str) -> str:
    """A few words on what `fit` does to a source of this (w, h): e.g. 'letterboxed (scale 0.137, 15 px bars left
    and right)'."""
    w, h = source
    if mode == "stretch":
        return f"stretched (x {fit.scale_x:.3g}, y {fit.scale_y:.3g})"
    if mode == "letterbox":
        bars_x, bars_y = fit.width - fit.scale_x * w, fit.height - fit.scale_y * h
        where = (f", {bars_x / 2:.0f} px bars left and right" if bars_x >= 1 else
                 f", {bars_y / 2:.0f} px bars top and bottom" if bars_y >= 1 else "")
        return f"letterboxed (scale {fit.scale_x:.3g}{where})"
    cut_x, cut_y = fit.scale_x * w - fit.width, fit.scale_y * h - fit.height
    cut = f", {cut_x:.0f} px cut across" if cut_x >= 1 else f", {cut_y:.0f} px cut down" if cut_y >= 1 else ""
    return f"cropped (scale {fit.scale_x:.3g}{cut})"
