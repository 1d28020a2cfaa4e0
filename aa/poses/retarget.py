"""Retarget a driving pose sequence onto the reference character: its proportions, size and placement.

Paper 4.1: "poses are rescaled to the reference character's size". Moore-AnimateAnyone ships no retargeting;
MusePose (`pose_align.py`) rescales each limb about its parent joint, anchored at the neck. Two methods here, both
fitted once on an anchor driving frame against the reference pose and then applied to every frame, so the
driving video's own motion (steps, turns, zoom) is kept:

- "global": one scale and translation, the least-squares fit of the anchor's torso and head points onto the
  reference's (those points barely move with posture, unlike hands and feet).
- "limbs": the neck placed by the global fit, then every bone rebuilt outward from the neck with the length ratio
  reference / anchor of that bone; hands follow their wrist scaled like the forearm, the face follows the nose.

Missing points (confidence 0) stay missing, confidences are kept, and every ratio the anchor or reference cannot
measure falls back to the mirrored bone's, then to the global scale. Output poses live on the reference's canvas.
"""
from __future__ import annotations

import numpy as np

from aa.poses.keypoints import Pose

# Torso and head points of OpenPose-18: nose, neck, shoulders, hips, eyes, ears.
TORSO_HEAD = (0, 1, 2, 5, 8, 11, 14, 15, 16, 17)
# The body as a tree rooted at the neck (1): (parent, child), parents before children.
BONES = ((1, 0), (1, 2), (1, 5), (1, 8), (1, 11), (0, 14), (0, 15), (2, 3), (5, 6), (8, 9), (11, 12), (14, 16),
         (15, 17), (3, 4), (6, 7), (9, 10), (12, 13))
# Left-right mirror of each body point (for borrowing a bone ratio from the other side).
MIRROR = (0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16)
NECK, NOSE, RIGHT_WRIST, LEFT_WRIST = 1, 0, 4, 7
FOREARMS = {"right_hand": (3, 4), "left_hand": (6, 7)}
METHODS = ("limbs", "global")


def fit_global(driving: Pose, reference: Pose, min_conf: float = 0.3) -> tuple[float, np.ndarray]:
    """Scale s and shift t (2,) minimising sum |s * driving + t - reference|^2 over the torso and head points
    confident in both poses (all body points if fewer than two of those are). With fewer than two usable points
    the scale is the ratio of canvas heights and the shift aligns the one common point, or the canvas centres."""
    both = (driving.body[:, 2] >= min_conf) & (reference.body[:, 2] >= min_conf)
    core = both & np.isin(np.arange(len(both)), TORSO_HEAD)
    use = core if core.sum() >= 2 else both
    d, r = driving.body[use, :2].astype(np.float64), reference.body[use, :2].astype(np.float64)
    canvas_scale = reference.height / driving.height
    if len(d) >= 2:
        dc, rc = d - d.mean(0), r - r.mean(0)
        denom = (dc ** 2).sum()
        scale = (dc * rc).sum() / denom if denom > 1e-9 else canvas_scale
        if scale > 0:
            return float(scale), r.mean(0) - scale * d.mean(0)
    if len(d) >= 1:
        return canvas_scale, r.mean(0) - canvas_scale * d.mean(0)
    ref_centre = np.array([reference.width, reference.height], np.float64) / 2
    drv_centre = np.array([driving.width, driving.height], np.float64) / 2
    return canvas_scale, ref_centre - canvas_scale * drv_centre


def bone_ratios(driving: Pose, reference: Pose, scale: float, min_conf: float = 0.3) -> np.ndarray:
    """(len(BONES),) reference / driving length of each bone; unmeasurable ones borrow the mirrored bone's ratio,
    else the global `scale`."""
    def lengths(pose: Pose) -> np.ndarray:
        b = pose.body
        out = np.full(len(BONES), np.nan)
        for i, (p, c) in enumerate(BONES):
            if b[p, 2] >= min_conf and b[c, 2] >= min_conf:
                out[i] = np.hypot(*(b[c, :2].astype(np.float64) - b[p, :2]))
        return out

    d, r = lengths(driving), lengths(reference)
    ratios = np.where(d > 1e-6, r / np.where(d > 1e-6, d, 1.0), np.nan)
    index = {bone: i for i, bone in enumerate(BONES)}
    mirrored = np.array([ratios[index[(MIRROR[p], MIRROR[c])]] for p, c in BONES])
    ratios = np.where(np.isnan(ratios), mirrored, ratios)
    return np.where(np.isnan(ratios), scale, ratios)


def _moved(points: np.ndarray, new_xy: np.ndarray) -> np.ndarray:
    """Points with new coordinates where present; missing points (confidence 0) stay all zero."""
    out = np.zeros_like(points)
    present = points[:, 2] > 0
    out[present, :2] = new_xy[present]
    out[present, 2] = points[present, 2]
    return out


def _apply_global(pose: Pose, scale: float, shift: np.ndarray, reference: Pose) -> Pose:
    parts = {name: _moved(a, scale * a[:, :2].astype(np.float64) + shift)
             for name, a in (("body", pose.body), ("left_hand", pose.left_hand), ("right_hand", pose.right_hand),
                             ("face", pose.face))}
    return Pose(reference.width, reference.height, **parts)


def _apply_limbs(pose: Pose, scale: float, shift: np.ndarray, ratios: np.ndarray, reference: Pose) -> Pose:
    body = pose.body.astype(np.float64)
    present = body[:, 2] > 0
    new = scale * body[:, :2] + shift  # global placement; kept for the neck and for points without a parent
    for (parent, child), ratio in zip(BONES, ratios):
        if present[parent] and present[child]:
            new[child] = new[parent] + ratio * (body[child, :2] - body[parent, :2])

    def follow(points: np.ndarray, root: int, ratio: float) -> np.ndarray:
        """Move a hand or the face rigidly with a body point, scaled by `ratio`."""
        xy = points[:, :2].astype(np.float64)
        if present[root]:
            return _moved(points, new[root] + ratio * (xy - body[root, :2]))
        return _moved(points, scale * xy + shift)

    index = {bone: i for i, bone in enumerate(BONES)}
    head = float(np.mean([ratios[index[(0, 14)]], ratios[index[(0, 15)]]]))
    return Pose(reference.width, reference.height, body=_moved(pose.body, new),
                left_hand=follow(pose.left_hand, LEFT_WRIST, ratios[index[FOREARMS["left_hand"]]]),
                right_hand=follow(pose.right_hand, RIGHT_WRIST, ratios[index[FOREARMS["right_hand"]]]),
                face=follow(pose.face, NOSE, head))


def pick_anchor(driving: list[Pose], min_conf: float = 0.3) -> int:
    """Index of the first frame with the most confident torso and head points."""
    counts = [int((p.body[list(TORSO_HEAD), 2] >= min_conf).sum()) for p in driving]
    return int(np.argmax(counts))


def retarget(driving: list[Pose], reference: Pose, method: str = "limbs", *, anchor: int | None = 0,
             min_conf: float = 0.3) -> list[Pose]:
    """Driving poses moved onto the reference character, on the reference's canvas.

    `method`: "limbs" (per-bone rescale about parent joints, anchored at the neck) or "global" (one scale and
    shift). The fit uses driving frame `anchor` (None: the first frame with the most confident torso and head
    points, see `pick_anchor`); points under `min_conf` are ignored by the fit but still moved."""
    if method not in METHODS:
        raise ValueError(f"retarget: unknown method {method!r}, expected one of {METHODS}")
    if not driving:
        return []
    anchor = pick_anchor(driving, min_conf) if anchor is None else anchor
    if not -len(driving) <= anchor < len(driving):
        raise IndexError(f"retarget: anchor frame {anchor} outside the {len(driving)} driving frames")
    scale, shift = fit_global(driving[anchor], reference, min_conf)
    if method == "global":
        return [_apply_global(p, scale, shift, reference) for p in driving]
    ratios = bone_ratios(driving[anchor], reference, scale, min_conf)
    return [_apply_limbs(p, scale, shift, ratios, reference) for p in driving]
