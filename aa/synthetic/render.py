"""Draw a posed character and read off its exact OpenPose keypoints.

Parts are drawn back to front (painter's algorithm on their depth) on a supersampled float canvas, then box-filtered
down. Limbs are capsules through the skeleton's joints, the torso a tapered elliptic cylinder, the head an ellipsoid
that carries the face; so every keypoint lies on the part it belongs to. An owner map records which body part drew
each pixel last: a keypoint is visible (confidence 1) when its own part owns its pixel, it is inside the frame and,
for face points, it is on the side of the head turned toward the camera. Hidden points keep their true position
with confidence 0. Hair and accessories (hat, scarf, bag, skirt) do not hide keypoints, as clothes don't for OpenPose.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from aa.poses.keypoints import BODY_NAMES, Pose
from aa.synthetic.canvas import OWNERS, Canvas, background, supersampling
from aa.synthetic.character import Character
from aa.synthetic.parts import (
    draw_bag,
    draw_hat,
    draw_head,
    draw_limb,
    draw_shadow,
    draw_skirt,
    draw_torso,
    hair_volume,
)
from aa.synthetic.skeleton import Figure, PoseState, pose_figure


def _items(ch: Character, fig: Figure) -> list[tuple[float, Callable[[Canvas], None]]]:
    """Every part with its depth (pixels toward the camera), to be drawn in increasing depth."""
    P = fig.points

    def z(*names: str) -> float:
        return float(np.mean([P[n][2] for n in names]))

    eps = 0.01 * fig.scale
    items = [(0.0, lambda cv: draw_torso(cv, ch, fig)),
             (P["head"][2] + 1.5 * eps, lambda cv: draw_head(cv, ch, fig))]
    for side in ("right", "left"):
        items.append((z(f"{side}_shoulder", f"{side}_elbow", f"{side}_wrist") + 2 * eps,
                      lambda cv, n=f"{side}_arm": draw_limb(cv, ch, fig, n)))
        items.append((z(f"{side}_hip", f"{side}_knee", f"{side}_ankle") - eps,
                      lambda cv, n=f"{side}_leg": draw_limb(cv, ch, fig, n)))
    items += hair_volume(ch, fig)
    if ch.hat:
        items.append((P["head"][2] + 1.4 * fig.head.rx, lambda cv: draw_hat(cv, ch, fig)))  # over any hair
    if ch.skirt:
        items.append((max(z("right_knee"), z("left_knee"), 0.0) + 0.5 * eps, lambda cv: draw_skirt(cv, ch, fig)))
    if ch.bag:
        items.append((P["bag"][2], lambda cv: draw_bag(cv, ch, fig)))
    return items


_FACING = 0.05  # a face point is seen when the head surface under it faces the camera at least this much
# which parts may own the pixel under each body keypoint for it to count as visible
_BODY_OWNERS = {"nose": ("head",), "neck": ("torso", "head"), "right_eye": ("head",), "left_eye": ("head",),
                "right_ear": ("head",), "left_ear": ("head",),
                **{f"{s}_{j}": ("torso", f"{s}_arm") if j == "shoulder" else (f"{s}_arm",)
                   for s in ("right", "left") for j in ("shoulder", "elbow", "wrist")},
                **{f"{s}_{j}": ("torso", f"{s}_leg") if j == "hip" else (f"{s}_leg",)
                   for s in ("right", "left") for j in ("hip", "knee", "ankle")}}


def _keypoints(cv: Canvas, fig: Figure, width: int, height: int) -> Pose:
    """Read the pose off the drawing: exact positions, confidence 1 where the point is seen."""
    def seen(x: float, y: float, owners: tuple[str, ...]) -> float:
        on_frame = -0.5 <= x < width - 0.5 and -0.5 <= y < height - 0.5
        return float(on_frame and cv.owner_at(x, y) in [OWNERS[o] for o in owners])

    body = np.zeros((18, 3), np.float32)
    for i, name in enumerate(BODY_NAMES):
        if name in fig.head_points:
            x, y, facing = fig.head_points[name]
            turned = facing > (-0.5 if name.endswith("ear") else _FACING)  # ears show from the side and behind
            body[i] = x, y, seen(x, y, _BODY_OWNERS[name]) if turned else 0.0
        else:
            x, y = fig.points[name][:2]
            body[i] = x, y, seen(x, y, _BODY_OWNERS[name])
    face = np.array([(x, y, seen(x, y, ("head",)) if f > _FACING else 0.0) for x, y, f in fig.face], np.float32)
    hands = {s: np.array([(x, y, seen(x, y, (f"{s}_arm",))) for x, y, _ in fig.hands[s]], np.float32)
             for s in ("right", "left")}
    return Pose(width, height, body=body, left_hand=hands["left"], right_hand=hands["right"], face=face)


def render_frame(character: Character, pose_state: PoseState, width: int, height: int) -> tuple[np.ndarray, Pose]:
    """Draw `character` in `pose_state` on a `width` x `height` frame: (h, w, 3) uint8 RGB and its exact Pose."""
    image, pose, _ = render_frame_box(character, pose_state, width, height)
    return image, pose


def render_frame_box(character: Character, pose_state: PoseState, width: int, height: int
                     ) -> tuple[np.ndarray, Pose, tuple[int, int, int, int]]:
    """`render_frame` plus the character's bounding box (x0, y0, x1, y1), end-exclusive output pixels: every pixel
    a part of the character (body, hair, hat, clothes, bag; not its ground shadow) changed; (0, 0, 0, 0) if none."""
    image, pose, box, _ = render_frame_parts(character, pose_state, width, height)
    return image, pose, box


def render_frame_parts(character: Character, pose_state: PoseState, width: int, height: int
                       ) -> tuple[np.ndarray, Pose, tuple[int, int, int, int], np.ndarray]:
    """`render_frame_box` plus what each pixel shows, (h, w) uint8 canvas.PARTS values (canvas.MIXED where an edge
    pixel shows more than one part): where per-part colour metrics look."""
    ss = supersampling(width, height)
    fig = pose_figure(character, pose_state, width, height)
    cv = Canvas(background(character.background, width, height, ss), ss)
    draw_shadow(cv, fig, pose_state, height)
    backdrop = cv.rgb.copy()
    for _, draw in sorted(_items(character, fig), key=lambda item: item[0]):
        draw(cv)
    drawn = (cv.rgb != backdrop).any(axis=-1).reshape(height, ss, width, ss).any(axis=(1, 3))  # (h, w)
    ys, xs = np.nonzero(drawn)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else (0, 0, 0, 0)
    return cv.image(), _keypoints(cv, fig, width, height), box, cv.labels()
