"""A library of motions: smooth functions of time (seconds) -> `PoseState`, with per-clip parameters.

Every motion is built from sines and smooth bumps, so poses are continuous in time and clips can be sampled at any
frame rate. `sample_params` draws the speed, amplitude, phase, side and facing of one clip.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aa.synthetic.skeleton import Limb, PoseState

TAU = 2 * np.pi


@dataclass(frozen=True)
class MotionParams:
    """What makes two clips of the same motion differ."""

    speed: float = 0.5   # cycles per second
    amp: float = 1.0     # amplitude multiplier
    phase: float = 0.0   # radians into the cycle at t = 0
    side: int = 1        # -1: the person's right side leads, +1: the left
    facing: float = 0.0  # body yaw, radians (0 faces the camera)
    x0: float = 0.0      # root offset at t = 0, figure units
    travel: float = 0.0  # root speed along x, figure units per second
    variant: int = 0     # motion-specific style


def _bump(w: float) -> float:
    """(1 + cos w) / 2 squared: a smooth pulse that peaks at w = 0 (mod 2 pi) and rests at 0 half a cycle away."""
    return ((1.0 + np.cos(w)) / 2.0) ** 2


def walk(t: float, p: MotionParams) -> PoseState:
    """Alternating leg swings with knee lift in the swing phase and counter-swinging arms; travels along x."""
    w = TAU * p.speed * t + p.phase
    s, a = np.sin(w), p.amp
    legs = [Limb(out=0.03, fwd=0.45 * a * sgn * s, fwd2=-(0.1 + 0.75 * a * _bump(w + (0 if sgn > 0 else np.pi))))
            for sgn in (1, -1)]
    arms = [Limb(out=0.1, fwd=-0.45 * a * sgn * s, fwd2=0.35 + 0.25 * a * _bump(w + (np.pi if sgn > 0 else 0)))
            for sgn in (1, -1)]
    return PoseState(x=p.x0 + p.travel * t, yaw=p.facing, head_roll=0.03 * s, right_arm=arms[0], left_arm=arms[1],
                     right_leg=legs[0], left_leg=legs[1])


def wave(t: float, p: MotionParams) -> PoseState:
    """One raised forearm (both for variant 1) swaying side to side about the vertical."""
    w = TAU * p.speed * t + p.phase
    up = Limb(out=2.1, fwd=0.15, out2=np.pi - 2.1 + 0.5 * p.amp * np.sin(w))
    down = Limb(out=0.12, fwd2=0.2)
    both = p.variant == 1
    other = Limb(out=2.1, fwd=0.15, out2=np.pi - 2.1 - 0.5 * p.amp * np.sin(w)) if both else down
    right, left = (up, other) if p.side < 0 else (other, up)
    return PoseState(x=p.x0, yaw=p.facing, lean=0.04 * p.side * np.sin(w), head_roll=0.08 * np.sin(w),
                     right_arm=right, left_arm=left)


def dance(t: float, p: MotionParams) -> PoseState:
    """Arms pumping in antiphase, hips swaying, knees bouncing at twice the tempo, a slow twist."""
    w = TAU * p.speed * t + p.phase
    a = p.amp
    bend = 0.25 + 0.2 * a * np.sin(2 * w)
    leg = Limb(out=0.12, fwd=0.5 * bend, fwd2=-bend)
    arms = [Limb(out=1.2 + 0.9 * a * np.sin(w + k), fwd=0.3, out2=0.5 + 0.5 * np.sin(w + k + 1.0), fwd2=0.3)
            for k in (0.0, np.pi)]
    return PoseState(x=p.x0 + 0.04 * a * np.sin(w), yaw=p.facing + 0.3 * np.sin(w / 2), lean=0.12 * a * np.sin(w),
                     head_roll=-0.1 * np.sin(w), right_arm=arms[0], left_arm=arms[1], right_leg=leg, left_leg=leg)


def jump(t: float, p: MotionParams) -> PoseState:
    """Crouch, take off with arms swinging up, fly a sine arc, land; variant 1 is a star jump."""
    c = (p.speed * t + p.phase / TAU) % 1.0
    air = np.sin(np.pi * c / 0.45) if c < 0.45 else 0.0          # 0 at take-off and landing: continuous
    crouch = np.sin(np.pi * (c - 0.45) / 0.55) ** 2 if c >= 0.45 else 0.0
    star = p.variant == 1
    knee = 0.9 * p.amp * crouch + 0.3 * air
    leg = Limb(out=0.03 + (0.35 * air if star else 0.0), fwd=0.5 * knee, fwd2=-knee)
    arm = Limb(out=0.2 + 1.8 * air, fwd=(0.0 if star else 0.4 * air) - 0.5 * crouch, fwd2=0.2)
    return PoseState(x=p.x0, lift=0.09 * p.amp * air, yaw=p.facing, right_arm=arm, left_arm=arm,
                     right_leg=leg, left_leg=leg)


def turn(t: float, p: MotionParams) -> PoseState:
    """Spin about the vertical axis (variant 0), or turn to show the back and come round again (variant 1)."""
    w = TAU * p.speed * t + p.phase
    yaw = p.facing + (p.side * TAU * p.speed * t if p.variant == 0 else p.amp * np.pi * np.sin(w))
    arm = Limb(out=0.3, fwd=0.1, fwd2=0.3)
    return PoseState(x=p.x0, yaw=yaw, right_arm=arm, left_arm=arm)


def squat(t: float, p: MotionParams) -> PoseState:
    """Knees bend while the thighs come forward, arms reach forward for balance."""
    c = (1.0 - np.cos(TAU * p.speed * t + p.phase)) / 2.0 * p.amp
    leg = Limb(out=0.1, fwd=0.85 * c, fwd2=-1.7 * c)
    arm = Limb(out=0.12, fwd=1.4 * c, fwd2=0.2 * (1 - c))
    return PoseState(x=p.x0, yaw=p.facing, right_arm=arm, left_arm=arm, right_leg=leg, left_leg=leg)


def arm_circles(t: float, p: MotionParams) -> PoseState:
    """Straight arms held out, circling together (variant 0) or windmilling in antiphase (variant 1)."""
    w = TAU * p.speed * t + p.phase
    if p.variant == 0:
        arms = [Limb(out=np.pi / 2 + 0.4 * p.amp * np.cos(w), fwd=0.4 * p.amp * np.sin(w)) for _ in range(2)]
    else:
        arms = [Limb(out=np.pi / 2 + 1.2 * p.amp * np.sin(w + k), fwd=0.2) for k in (0.0, np.pi)]
    return PoseState(x=p.x0, yaw=p.facing, right_arm=arms[0], left_arm=arms[1])


def kick(t: float, p: MotionParams) -> PoseState:
    """Front kicks alternating legs (variant 1: one leg), knee chambered on the way; fists up."""
    w = TAU * p.speed * t + p.phase
    lead = max(0.0, np.sin(w)) ** 2
    trail = max(0.0, np.sin(w + np.pi)) ** 2 if p.variant == 0 else 0.0
    k_r, k_l = (lead, trail) if p.side < 0 else (trail, lead)

    def leg(k: float) -> Limb:
        return Limb(out=0.05, fwd=1.3 * p.amp * k, fwd2=-2.4 * k * (1.0 - k))

    guard = Limb(out=0.35, fwd=0.5, fwd2=1.7)
    toward = 1.0 if np.sin(p.facing) >= 0 else -1.0
    return PoseState(x=p.x0, yaw=p.facing, lean=-toward * 0.15 * max(k_r, k_l), right_arm=guard, left_arm=guard,
                     right_leg=leg(k_r), left_leg=leg(k_l))


Motion = Callable[[float, MotionParams], PoseState]
MOTIONS: dict[str, Motion] = {"walk": walk, "wave": wave, "dance": dance, "jump": jump, "turn": turn,
                              "squat": squat, "arm_circles": arm_circles, "kick": kick}
HELD_OUT_MOTIONS = ("kick", "arm_circles")
TRAIN_MOTIONS = tuple(m for m in MOTIONS if m not in HELD_OUT_MOTIONS)


def sample_params(motion: str, rng: np.random.Generator, duration: float) -> MotionParams:
    """Draw one clip's parameters; `duration` (seconds) keeps travelling motions inside the frame."""
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; known: {', '.join(MOTIONS)}")
    u = rng.uniform
    side = int(rng.choice([-1, 1]))
    p = dict(speed=u(0.35, 0.7), amp=u(0.7, 1.15), phase=u(0, TAU), side=side, x0=u(-0.08, 0.08),
             variant=int(rng.integers(2)))
    three_quarter = float(rng.choice([-1, 1]) * u(0.0, 0.9))
    if motion == "walk":
        facing = float(rng.choice([0.0, np.pi / 4, np.pi / 2, -np.pi / 4, -np.pi / 2]) + u(-0.15, 0.15))
        travel = np.sin(facing) * min(0.45 * p["speed"], 0.7 / max(duration, 1e-6))  # crosses at most 0.7
        p.update(facing=facing, travel=travel, x0=-travel * duration / 2)
    elif motion == "jump":  # the arms swing fast: keep it slow enough for 8 fps
        p.update(facing=three_quarter * 0.6, speed=u(0.3, 0.5))
    elif motion == "turn":
        p.update(facing=u(-0.5, 0.5), speed=u(0.12, 0.3))
    elif motion in ("kick", "squat"):
        p.update(facing=float(rng.choice([-1, 1]) * u(0.5, 1.4)))
    else:
        p.update(facing=three_quarter * 0.6)
    return MotionParams(**p)
