"""Synthetic characters: proportions, colours, clothing, accessories and background, sampled from a seed.

A `Character` is plain data (frozen, hashable); `skeleton.py` poses it and `render.py` draws it. Lengths are in
"figure units": the character standing straight measures 1 from the top of the head to the soles.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

RGB = tuple[int, int, int]

PATTERNS = ("solid", "hstripes", "vstripes", "diagonal", "checks", "dots")
LOGOS = ("star", "circle", "ring", "triangle", "diamond", "plus", "X", "T", "H", "L")
HAIR_STYLES = ("bald", "short", "long", "bun", "afro", "ponytail")
HATS = ("beanie", "tophat", "cap")
BACKGROUNDS = ("flat", "gradient", "horizon", "checks", "stripes", "dots")

# Skin tones from light to dark (each jittered a little per character).
_SKIN = ((255, 224, 196), (241, 194, 155), (224, 172, 125), (198, 134, 92), (161, 102, 62), (118, 72, 43),
         (88, 54, 36), (232, 190, 172))
_HAIR = ((25, 20, 20), (70, 45, 30), (120, 80, 40), (220, 190, 110), (170, 70, 30), (150, 150, 150),
         (40, 60, 160), (210, 90, 160))


@dataclass(frozen=True)
class Garment:
    """A piece of clothing: base colour, second colour of its pattern, pattern name, period (figure units)."""

    colour: RGB
    accent: RGB
    pattern: str
    period: float


@dataclass(frozen=True)
class Background:
    """A static backdrop: kind (one of BACKGROUNDS), two colours and a pattern period (fraction of frame height)."""

    kind: str
    colour: RGB
    accent: RGB
    period: float


@dataclass(frozen=True)
class Character:
    """Everything needed to draw one character; lengths in figure units (standing height = 1)."""

    seed: int
    size: float            # standing height as a fraction of the tallest figure the frame holds
    head_radius: float     # half the head's width
    head_aspect: float     # head height / head width
    neck: float            # shoulder line (the OpenPose neck point) to the bottom of the head
    torso: float           # shoulder line to hip line
    shoulder: float        # half distance between the shoulder joints
    hip: float             # half distance between the hip joints
    upper_arm: float
    forearm: float
    hand: float            # wrist to the tip of the middle finger
    thigh: float
    shin: float
    foot: float            # heel to toe
    arm_radius: float      # half thickness of the upper arm (forearm: 0.85 of it)
    leg_radius: float      # half thickness of the thigh (shin: 0.8 of it)
    foot_radius: float     # half thickness of the shoe; the sole lies 1.4 radii below the ankle
    depth: float           # torso depth / torso width
    skin: RGB
    hair_style: str
    hair: RGB
    eyes: RGB
    shirt: Garment
    sleeve: float          # how far sleeves reach along the arm: 0.5 short, 1 elbow, 2 wrist
    trousers: Garment
    legwear: float         # how far trousers reach along the leg: 0.6 shorts, 2 ankles
    skirt: bool
    shoes: RGB
    logo: str | None       # chest print, one of LOGOS
    logo_colour: RGB
    hat: str | None
    hat_colour: RGB
    belt: RGB | None
    bag: RGB | None
    scarf: RGB | None
    glasses: RGB | None
    background: Background


def _hsv(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float], hue: float | None = None) -> RGB:
    h = rng.uniform() if hue is None else hue % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(*s), rng.uniform(*v))
    return (int(r * 255), int(g * 255), int(b * 255))


def _distance(a: RGB, b: RGB) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=float)))


def _distinct(rng: np.random.Generator, avoid: list[RGB], s: tuple[float, float], v: tuple[float, float],
              min_distance: float = 90.0) -> RGB:
    """A colour at least `min_distance` (RGB euclidean) from every colour in `avoid` (best of 20 draws)."""
    best, best_d = (0, 0, 0), -1.0
    for _ in range(20):
        c = _hsv(rng, s, v)
        d = min((_distance(c, a) for a in avoid), default=1e9)
        if d >= min_distance:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _garment(rng: np.random.Generator, avoid: list[RGB], solid_p: float) -> Garment:
    colour = _distinct(rng, avoid, (0.35, 0.95), (0.3, 0.95))
    pattern = "solid" if rng.uniform() < solid_p else str(rng.choice(PATTERNS[1:]))
    accent = _distinct(rng, [colour], (0.0, 0.9), (0.2, 1.0), min_distance=120.0)
    return Garment(colour, accent, pattern, float(rng.uniform(0.03, 0.055)))


def _proportions(rng: np.random.Generator) -> dict[str, float]:
    """Raw lengths, then scaled so the standing height (head top to soles) is exactly 1."""
    u = rng.uniform
    p = dict(head_radius=u(0.085, 0.11), head_aspect=u(1.05, 1.2), neck=u(0.02, 0.035), torso=u(0.27, 0.33),
             shoulder=u(0.1, 0.14), hip=u(0.06, 0.09), upper_arm=u(0.14, 0.17), forearm=u(0.12, 0.15),
             hand=u(0.075, 0.09), thigh=u(0.19, 0.24), shin=u(0.18, 0.23), foot=u(0.08, 0.1),
             arm_radius=u(0.03, 0.045), leg_radius=u(0.042, 0.065), depth=u(0.5, 0.7))
    p["foot_radius"] = 0.8 * p["leg_radius"] * u(0.8, 1.0)  # a shoe about as wide as the ankle
    height = (2 * p["head_radius"] * p["head_aspect"] + p["neck"] + p["torso"] + p["thigh"] + p["shin"]
              + 1.4 * p["foot_radius"])
    return {k: (v if k in ("head_aspect", "depth") else v / height) for k, v in p.items()}


def sample_character(seed: int, backgrounds: tuple[str, ...] = BACKGROUNDS) -> Character:
    """Draw a character from `seed` (same seed, same character)."""
    rng = np.random.default_rng(seed)
    skin = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in _SKIN[rng.integers(len(_SKIN))])
    hair = _HAIR[rng.integers(len(_HAIR))]
    shirt = _garment(rng, [skin], solid_p=0.3)
    trousers = _garment(rng, [skin, shirt.colour], solid_p=0.6)
    logo = None if rng.uniform() < 0.25 else str(rng.choice(LOGOS))
    logo_colour = _distinct(rng, [shirt.colour, shirt.accent], (0.5, 1.0), (0.5, 1.0), min_distance=140.0)
    hat = str(rng.choice(HATS)) if rng.uniform() < 0.3 else None
    kind = str(rng.choice(backgrounds))
    figure = [skin, shirt.colour, trousers.colour, hair]
    bg = _distinct(rng, figure, (0.05, 0.45), (0.25, 0.95), min_distance=110.0)
    bg_accent = _distinct(rng, [bg], (0.05, 0.5), (0.2, 1.0), min_distance=50.0)
    return Character(
        seed=seed, size=float(rng.uniform(0.82, 1.0)), **_proportions(rng),
        skin=skin, hair_style=str(rng.choice(HAIR_STYLES)), hair=hair,
        eyes=_hsv(rng, (0.3, 0.8), (0.15, 0.45)),
        shirt=shirt, sleeve=float(rng.choice([0.5, 1.0, 1.9])),
        trousers=trousers, legwear=float(rng.choice([0.65, 1.3, 2.0, 2.0])), skirt=bool(rng.uniform() < 0.2),
        shoes=_hsv(rng, (0.0, 0.7), (0.1, 0.8)),
        logo=logo, logo_colour=logo_colour,
        hat=hat, hat_colour=_distinct(rng, [hair, bg], (0.3, 0.9), (0.2, 0.9)),
        belt=_hsv(rng, (0.2, 0.6), (0.1, 0.5)) if rng.uniform() < 0.35 else None,
        bag=_distinct(rng, [shirt.colour], (0.4, 0.9), (0.3, 0.8)) if rng.uniform() < 0.3 else None,
        scarf=_distinct(rng, [shirt.colour, skin], (0.5, 1.0), (0.4, 0.95)) if rng.uniform() < 0.25 else None,
        glasses=_hsv(rng, (0.0, 0.8), (0.05, 0.4)) if rng.uniform() < 0.25 else None,
        background=Background(kind, bg, bg_accent, float(rng.uniform(0.06, 0.16))),
    )
