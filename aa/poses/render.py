"""Draw a Pose as the DWPose renderer does: the pose images the released Animate Anyone weights were trained on.

Reference: DWPose `annotator/dwpose/util.py` (`draw_bodypose`, `draw_handpose`, `draw_facepose`, called in that
order by `draw_pose`), which Moore-AnimateAnyone, MusePose and controlnet_aux ship unchanged (novita-ai's retrain
draws hand joints with radius 2 instead). On a black canvas:
the 17 limbs as filled ellipses of half-width 4 in the 18-colour OpenPose palette, the canvas dimmed to 0.6, the 18
joints as radius-4 discs, each hand's 20 edges as 2 px lines coloured by hue (edge i at hue i/20) with blue
radius-4 joints, the face as radius-3 white dots. Shapes follow OpenCV's pixel rules (aa/poses/raster.py).
"""
from __future__ import annotations

import colorsys
import math

import numpy as np

from aa.poses.keypoints import Pose
from aa.poses.raster import ellipse_polygon, fill_circle, fill_convex_poly, thick_line

# Limbs as (parent, child) body indices, in drawing order (DWPose `limbSeq`, 1-based there). DWPose lists 19 but
# draws the first 17: the two ear-to-shoulder limbs are never drawn.
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
# Limb i and joint i share colour i (RGB).
BODY_COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
               (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
               (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
# Wrist (0) out to each finger tip: thumb 1-4, index 5-8, middle 9-12, ring 13-16, little 17-20.
HAND_EDGES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
              (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20))
# DWPose passes matplotlib's hsv_to_rgb(i/20, 1, 1) * 255 to OpenCV, which rounds half to even.
HAND_COLORS = tuple(tuple(int(np.rint(c * 255)) for c in colorsys.hsv_to_rgb(i / 20, 1.0, 1.0)) for i in range(20))
HAND_JOINT_COLOR, FACE_COLOR = (0, 0, 255), (255, 255, 255)
STICK_WIDTH, JOINT_RADIUS, HAND_LINE_WIDTH, HAND_JOINT_RADIUS, FACE_RADIUS = 4, 4, 2, 4, 3
LIMB_DIM = 0.6  # limbs are drawn first, then the whole canvas is scaled by 0.6 (so limbs read darker than joints)
THRESHOLD = 0.3  # DWPose hides body points with score <= 0.3 and hand/face points with score < 0.3


def _to_canvas(points: np.ndarray, pose: Pose, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y in pixels of the target canvas; DWPose keeps points normalised to [0, 1] and multiplies by W, H."""
    return (points[:, 0].astype(np.float64) / pose.width * width,
            points[:, 1].astype(np.float64) / pose.height * height)


def _draw_body(canvas: np.ndarray, pose: Pose, threshold: float) -> np.ndarray:
    """Limbs, dimming, then joints (DWPose `draw_bodypose`); returns the new, dimmed canvas."""
    height, width = canvas.shape[:2]
    xs, ys = _to_canvas(pose.body, pose, width, height)
    visible = pose.body[:, 2] > threshold
    for (a, b), color in zip(LIMBS, BODY_COLORS):
        if not (visible[a] and visible[b]):
            continue
        dx, dy = xs[a] - xs[b], ys[a] - ys[b]
        length = (dy ** 2 + dx ** 2) ** 0.5
        angle = math.degrees(math.atan2(dy, dx))
        center = (int((xs[a] + xs[b]) / 2), int((ys[a] + ys[b]) / 2))  # int() truncates, as in DWPose
        fill_convex_poly(canvas, ellipse_polygon(center, (int(length / 2), STICK_WIDTH), int(angle)), color)
    canvas = (canvas * LIMB_DIM).astype(np.uint8)
    for i in np.flatnonzero(visible):
        fill_circle(canvas, (int(xs[i]), int(ys[i])), JOINT_RADIUS, BODY_COLORS[i])
    return canvas


def _pixel_points(points: np.ndarray, pose: Pose, canvas: np.ndarray, threshold: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer pixels of hand or face points and which of them DWPose draws: score >= threshold and, a quirk of
    its `x > eps` test on integer pixels, not in row 0 or column 0."""
    xs, ys = _to_canvas(points, pose, canvas.shape[1], canvas.shape[0])
    xi, yi = np.trunc(xs).astype(np.int64), np.trunc(ys).astype(np.int64)
    return xi, yi, (points[:, 2] >= threshold) & (xi > 0) & (yi > 0)


def _draw_hand(canvas: np.ndarray, hand: np.ndarray, pose: Pose, threshold: float) -> None:
    """Edges coloured by hue, then joints (DWPose `draw_handpose`)."""
    xi, yi, shown = _pixel_points(hand, pose, canvas, threshold)
    for (a, b), color in zip(HAND_EDGES, HAND_COLORS):
        if shown[a] and shown[b]:
            thick_line(canvas, (int(xi[a]), int(yi[a])), (int(xi[b]), int(yi[b])), color, HAND_LINE_WIDTH)
    for i in np.flatnonzero(shown):
        fill_circle(canvas, (int(xi[i]), int(yi[i])), HAND_JOINT_RADIUS, HAND_JOINT_COLOR)


def render_pose(pose: Pose, width: int | None = None, height: int | None = None, *, hands: bool = True,
                face: bool = True, threshold: float = THRESHOLD) -> np.ndarray:
    """(height, width, 3) uint8 RGB image of one pose, drawn as DWPose draws it.

    The pose is stretched from its own canvas (pose.width x pose.height) to width x height (default: its own).
    `hands=False` / `face=False` leave those parts out; points under `threshold` confidence are hidden."""
    width = pose.width if width is None else width
    height = pose.height if height is None else height
    if width <= 0 or height <= 0 or pose.width <= 0 or pose.height <= 0:
        raise ValueError(f"render_pose: canvas sizes must be positive, got {width}x{height} for a pose on "
                         f"{pose.width}x{pose.height}")
    canvas = _draw_body(np.zeros((height, width, 3), np.uint8), pose, threshold)
    if hands:
        for hand in (pose.left_hand, pose.right_hand):
            _draw_hand(canvas, hand, pose, threshold)
    if face:
        xi, yi, shown = _pixel_points(pose.face, pose, canvas, threshold)
        for i in np.flatnonzero(shown):
            fill_circle(canvas, (int(xi[i]), int(yi[i])), FACE_RADIUS, FACE_COLOR)
    return canvas


def drawn_points(pose: Pose, *, hands: bool = True, face: bool = True, threshold: float = THRESHOLD) -> np.ndarray:
    """(n, 2) x, y in the pose's own pixels of the points `render_pose` would draw with these options (body points
    above `threshold`, hand and face points at or above it): what a check for an empty or off-canvas pose counts."""
    parts = [pose.body[pose.body[:, 2] > threshold]]
    for part, wanted in ((pose.left_hand, hands), (pose.right_hand, hands), (pose.face, face)):
        if wanted:
            parts.append(part[part[:, 2] >= threshold])
    return np.concatenate(parts)[:, :2]


def render_poses(poses: list[Pose], width: int | None = None, height: int | None = None, **options) -> np.ndarray:
    """(f, height, width, 3) uint8 video of a pose sequence; options as in `render_pose`."""
    if not poses:
        raise ValueError("render_poses: empty pose sequence")
    width = poses[0].width if width is None else width
    height = poses[0].height if height is None else height
    return np.stack([render_pose(p, width, height, **options) for p in poses])
