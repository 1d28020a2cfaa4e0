"""Forward kinematics: a character plus joint angles -> every joint, hand and face point in pixels.

The body is posed in 3D (x = the person's left, y = down, z = toward the camera; figure units, pelvis at the
origin), turned by `yaw` about the vertical axis, tilted by `lean` in the image plane, and projected orthographically
(z is kept for draw order and visibility). The head is a unit sphere stretched to the head's size; the face points
live on it, so they turn, foreshorten and hide with the head. `render.py` draws limbs through exactly these points.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aa.synthetic.character import Character


@dataclass(frozen=True)
class Limb:
    """Angles of a two-segment limb in radians; the lower segment's are relative to the upper's."""

    out: float = 0.0   # away from the body in the frontal plane (pi/2: horizontal, pi: straight up)
    fwd: float = 0.0   # toward the front in the sagittal plane (pi/2: pointing forward)
    out2: float = 0.0  # elbow/knee bend in the frontal plane
    fwd2: float = 0.0  # elbow/knee bend in the sagittal plane (knees bend with a negative value)


@dataclass(frozen=True)
class PoseState:
    """One frame of a motion: root placement, body turn and the four limbs."""

    x: float = 0.0          # root offset from the frame centre, figure units, + = image right
    lift: float = 0.0       # soles above the ground, figure units
    yaw: float = 0.0        # turn about the vertical axis: 0 faces the camera, pi/2 faces image right, pi the back
    lean: float = 0.0       # upper-body tilt about the pelvis in the image plane, + = clockwise on screen
    head_yaw: float = 0.0   # head turn relative to the body
    head_roll: float = 0.0  # head tilt about the neck in the image plane, + = clockwise
    right_arm: Limb = Limb(out=0.12, fwd2=0.2)
    left_arm: Limb = Limb(out=0.12, fwd2=0.2)
    right_leg: Limb = Limb(out=0.03)
    left_leg: Limb = Limb(out=0.03)


# 68 face points (iBUG order) on the front of the unit head sphere: (x, y) with x = the person's left, y down.
_JAW = [(0.88 * np.cos(a), 0.12 + 0.82 * np.sin(a)) for a in np.linspace(np.pi, 0.0, 17)]
_BROW_R = [(-0.58, -0.16), (-0.48, -0.22), (-0.37, -0.24), (-0.26, -0.22), (-0.17, -0.18)]
_NOSE = [(0.0, -0.06), (0.0, 0.05), (0.0, 0.16), (0.0, 0.27), (-0.11, 0.33), (-0.05, 0.35), (0.0, 0.36),
         (0.05, 0.35), (0.11, 0.33)]
_EYE_R = [(-0.5, 0.04), (-0.42, -0.01), (-0.3, -0.01), (-0.22, 0.04), (-0.3, 0.09), (-0.42, 0.09)]
_MOUTH = [(-0.25, 0.55), (-0.16, 0.5), (-0.06, 0.48), (0.0, 0.49), (0.06, 0.48), (0.16, 0.5), (0.25, 0.55),
          (0.16, 0.62), (0.06, 0.65), (0.0, 0.655), (-0.06, 0.65), (-0.16, 0.62),
          (-0.2, 0.55), (-0.06, 0.535), (0.0, 0.535), (0.06, 0.535), (0.2, 0.55), (0.06, 0.575), (0.0, 0.58),
          (-0.06, 0.575)]


GROUND = 0.95  # where the soles rest, as a fraction of the frame height


def _mirror(points: list) -> list:
    return [(-x, y) for x, y in points]


FACE_2D = np.array(_JAW + _BROW_R + _mirror(_BROW_R)[::-1] + _NOSE + _EYE_R
                   + [_mirror(_EYE_R)[i] for i in (3, 2, 1, 0, 5, 4)] + _MOUTH, np.float64)
EYE_CENTRES = np.array([(-0.36, 0.04), (0.36, 0.04)])  # right, left


def on_sphere(xy: np.ndarray) -> np.ndarray:
    """Lift (n, 2) front-face points onto the unit sphere's front: (n, 3)."""
    xy = np.asarray(xy, np.float64)
    return np.concatenate([xy, np.sqrt(np.clip(1.0 - (xy ** 2).sum(-1, keepdims=True), 0.0, 1.0))], -1)


_EAR = np.array([0.9, 0.1, 0.42]) / np.linalg.norm([0.9, 0.1, 0.42])  # a little inside the silhouette
HEAD_POINTS = {"nose": np.array([0.0, 0.3, np.sqrt(1 - 0.09)]), "right_eye": on_sphere(EYE_CENTRES[:1])[0],
               "left_eye": on_sphere(EYE_CENTRES[1:])[0], "right_ear": _EAR * [-1, 1, 1], "left_ear": _EAR}


def _rot_y(p: np.ndarray, angle: float) -> np.ndarray:
    """Turn (..., 3) points about the vertical axis: x' = x cos + z sin, z' = -x sin + z cos."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([p[..., 0] * c + p[..., 2] * s, p[..., 1], -p[..., 0] * s + p[..., 2] * c], -1)


def _rot_screen(p: np.ndarray, angle: float, about: np.ndarray) -> np.ndarray:
    """Rotate (..., 3) points in the image plane (x, y) about `about`; clockwise on screen for angle > 0."""
    c, s = np.cos(angle), np.sin(angle)
    d = p - about
    return np.stack([about[0] + d[..., 0] * c - d[..., 1] * s, about[1] + d[..., 0] * s + d[..., 1] * c,
                     p[..., 2]], -1)


def _direction(side: int, out: float, fwd: float) -> np.ndarray:
    """Unit vector of a limb segment: straight down, swung `fwd` toward the front, then `out` away from the body."""
    return np.array([side * np.sin(out) * np.cos(fwd), np.cos(out) * np.cos(fwd), np.sin(fwd)])


@dataclass
class HeadFrame:
    """Where the head sphere is on screen: centre (px), radii (px), turn and image-plane tilt."""

    centre: np.ndarray  # (2,) x, y in pixels
    rx: float
    ry: float
    yaw: float
    roll: float

    def to_screen(self, local: np.ndarray) -> np.ndarray:
        """(n, 3) unit-sphere points -> (n, 3) pixel x, y and facing (z of the turned sphere point, + = visible)."""
        p = _rot_y(np.asarray(local, np.float64), self.yaw)
        c, s = np.cos(self.roll), np.sin(self.roll)
        x, y = p[:, 0] * self.rx, p[:, 1] * self.ry
        return np.stack([self.centre[0] + x * c - y * s, self.centre[1] + x * s + y * c, p[:, 2]], -1)

    def to_local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixels -> inside mask, (..., 3) visible sphere point in head coordinates, its facing (0 edge, 1 centre)."""
        c, s = np.cos(self.roll), np.sin(self.roll)
        dx, dy = x - self.centre[0], y - self.centre[1]
        u, v = (dx * c + dy * s) / self.rx, (-dx * s + dy * c) / self.ry
        r2 = u * u + v * v
        w = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
        return r2 <= 1.0, _rot_y(np.stack([u, v, w], -1), -self.yaw), w


@dataclass
class Figure:
    """A posed, projected character. Points are (x, y, z) in pixels; z grows toward the camera."""

    scale: float                               # pixels per figure unit
    yaw: float
    points: dict[str, np.ndarray]              # named joints and shape anchors
    head: HeadFrame
    hands: dict[str, np.ndarray] = field(default_factory=dict)  # "right"/"left" -> (21, 3)
    face: np.ndarray | None = None             # (68, 3) x, y, facing
    head_points: dict[str, np.ndarray] = field(default_factory=dict)  # nose, eyes, ears -> x, y, facing


def _hand(wrist: np.ndarray, along: np.ndarray, side: int, length: float) -> np.ndarray:
    """21 hand points (OpenPose order: wrist, thumb 1-4, index, middle, ring, pinky 5-20) in the open-palm pose."""
    across = np.cross(along, [0.0, 0.0, 1.0])
    if np.linalg.norm(across) < 0.3:  # hand pointing at the camera: spread the fingers sideways instead
        across = np.cross(along, [0.0, -1.0, 0.0])
    across = side * across / np.linalg.norm(across)  # toward the thumb (palms forward: thumbs point outward)
    pts = [wrist]
    base = wrist + along * 0.12 * length + across * 0.14 * length
    thumb = along * 0.7 + across * 0.6
    pts += [base + thumb * length * k for k in (0.0, 0.22, 0.4, 0.55)]
    for offset, spread, flen in ((0.14, 0.12, 0.5), (0.04, 0.03, 0.55), (-0.05, -0.06, 0.5), (-0.14, -0.15, 0.4)):
        knuckle = wrist + along * 0.45 * length + across * offset * length
        d = along + across * spread
        d = d / np.linalg.norm(d)
        pts += [knuckle + d * flen * length * k for k in (0.0, 0.45, 0.75, 1.0)]
    return np.array(pts)


def pose_figure(ch: Character, state: PoseState, width: int, height: int) -> Figure:
    """Place `ch` in `state` on a `width` x `height` frame: 3D joints -> turn -> tilt -> pixels."""
    P: dict[str, np.ndarray] = {}
    neck = np.array([0.0, -ch.torso, 0.0])
    P["neck"] = neck
    head_lift = ch.neck + ch.head_radius * ch.head_aspect
    P["head"] = neck + [0.0, -head_lift, 0.0]
    along: dict[str, np.ndarray] = {}
    for side, name, limb in ((-1, "right", state.right_arm), (1, "left", state.left_arm)):
        shoulder = P[f"{name}_shoulder"] = neck + [side * ch.shoulder, 0.0, 0.0]
        elbow = P[f"{name}_elbow"] = shoulder + ch.upper_arm * _direction(side, limb.out, limb.fwd)
        along[name] = _direction(side, limb.out + limb.out2, limb.fwd + limb.fwd2)
        P[f"{name}_wrist"] = elbow + ch.forearm * along[name]
    for side, name, limb in ((-1, "right", state.right_leg), (1, "left", state.left_leg)):
        hip = P[f"{name}_hip"] = np.array([side * ch.hip, 0.0, 0.0])
        knee = P[f"{name}_knee"] = hip + ch.thigh * _direction(side, limb.out, limb.fwd)
        ankle = P[f"{name}_ankle"] = knee + ch.shin * _direction(side, limb.out + limb.out2, limb.fwd + limb.fwd2)
        # the foot stays at a right angle to the shin in the sagittal plane
        c, s = np.cos(limb.fwd + limb.fwd2), np.sin(limb.fwd + limb.fwd2)
        drop = 0.4 * ch.foot_radius
        for key, (dy, dz) in (("heel", (drop, -0.2 * ch.foot)), ("toe", (drop, 0.8 * ch.foot))):
            P[f"{name}_{key}"] = ankle + [0.0, dy * c - dz * s, dy * s + dz * c]
    hands = {n: _hand(P[f"{n}_wrist"], along[n], side, ch.hand) for side, n in ((-1, "right"), (1, "left"))}
    # accessory anchors: a bag hanging in front of the right hip, a scarf round the neck with a tail in front
    P["bag"] = np.array([-0.9 * ch.hip, 0.03, ch.depth * (ch.hip + 0.9 * ch.leg_radius) + 0.02])
    front = ch.depth * (ch.shoulder + ch.arm_radius)
    for side, name in ((-1, "right"), (1, "left")):
        P[f"scarf_{name}"] = neck + [side * 0.55 * ch.shoulder, -0.01, 0.0]
    P["scarf_tail"] = neck + [0.3 * ch.shoulder, 0.02, front]
    P["scarf_end"] = neck + [0.35 * ch.shoulder, 0.16, front]

    # turn about the vertical axis through the pelvis, then tilt the upper body about the pelvis
    P = {k: _rot_y(v, state.yaw) for k, v in P.items()}
    hands = {k: _rot_y(v, state.yaw) for k, v in hands.items()}
    legs = {f"{n}_{j}" for n in ("right", "left") for j in ("hip", "knee", "ankle", "heel", "toe")} | {"bag"}
    origin = np.zeros(3)
    P = {k: v if k in legs else _rot_screen(v, state.lean, origin) for k, v in P.items()}
    hands = {k: _rot_screen(v, state.lean, origin) for k, v in hands.items()}
    P["head"] = _rot_screen(P["head"], state.head_roll, P["neck"])

    # stand on the ground: the lowest sole touches it, then lift
    sole = max(P[f"{n}_{k}"][1] for n in ("right", "left") for k in ("heel", "toe")) + ch.foot_radius
    scale = ch.size * 0.76 * min(height, 1.2 * width)
    ground = GROUND * height
    offset = np.array([width / 2 + scale * state.x, ground - scale * (sole + state.lift), 0.0])
    P = {k: offset + scale * v for k, v in P.items()}
    P["pelvis"] = offset.copy()
    hands = {k: offset + scale * v for k, v in hands.items()}

    head = HeadFrame(P["head"][:2].copy(), scale * ch.head_radius, scale * ch.head_radius * ch.head_aspect,
                     state.yaw + state.head_yaw, state.lean + state.head_roll)
    fig = Figure(scale, state.yaw, P, head, hands)
    fig.face = head.to_screen(on_sphere(FACE_2D))
    fig.head_points = dict(zip(HEAD_POINTS, head.to_screen(np.stack(list(HEAD_POINTS.values())))))
    return fig
