"""Colour augmentation that forces the reference pathway: one random colour transform applied alike to a sample's
reference and target frames, so the only way to the targets' colours is through the reference.

Without it a network trained on a few hundred characters can memorise what they wear and fall back on that for a
new character (the torso of a green-shirted reference comes out the blue of some training shirt). A transform is a
per-pixel function of the RGB value only (no position): hue rotation (HSV), a channel permutation, a saturation
scale (towards the pixel's grey) and a brightness scale, in that order.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np

PERMUTATIONS = tuple(permutations(range(3)))
_LUMA = np.array([0.299, 0.587, 0.114])  # Rec. 601 weights: the grey a saturation change moves towards


def hue_rotate(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """Every pixel's hue turned by `degrees` in HSV, saturation and value kept: uint8 (..., 3) -> uint8 (..., 3).
    Greys stay as they are; a multiple of 360 degrees returns an unchanged copy."""
    rgb = np.asarray(rgb)
    if degrees % 360 == 0:
        return rgb.copy()
    c = rgb.astype(np.float64) / 255.0
    v = c.max(-1)
    chroma = v - c.min(-1)
    safe = np.where(chroma == 0, 1.0, chroma)
    r, g, b = np.moveaxis(c, -1, 0)
    h = np.where(v == r, (g - b) / safe % 6, np.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4))  # sextants
    h = (h + degrees / 60.0) % 6
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None]) % 6  # HSV -> RGB, each channel from its distance to the hue
    out = v[..., None] - chroma[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ColourTransform:
    """One draw of the augmentation; `apply` maps uint8 RGB images (..., 3) to uint8 RGB."""

    hue: float = 0.0  # degrees
    permutation: tuple[int, int, int] = (0, 1, 2)  # output channel i takes input channel permutation[i]
    saturation: float = 1.0  # 0 grey, 1 unchanged
    brightness: float = 1.0

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        out = hue_rotate(rgb, self.hue)[..., list(self.permutation)].astype(np.float64)
        if self.saturation != 1.0:
            grey = (out @ _LUMA)[..., None]
            out = grey + self.saturation * (out - grey)
        return np.clip(np.rint(out * self.brightness), 0, 255).astype(np.uint8)


def random_colour_transform(rng: np.random.Generator, saturation: tuple[float, float] = (0.6, 1.3),
                            brightness: tuple[float, float] = (0.8, 1.15)) -> ColourTransform:
    """A transform with a uniform hue turn, a uniform channel permutation and saturation/brightness scales drawn
    from the given ranges."""
    return ColourTransform(hue=float(rng.uniform(0, 360)), permutation=PERMUTATIONS[int(rng.integers(6))],
                           saturation=float(rng.uniform(*saturation)), brightness=float(rng.uniform(*brightness)))
