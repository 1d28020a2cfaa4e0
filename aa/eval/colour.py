"""Colour fidelity per body part: does the character keep its reference's colours?

Colours are compared in CIELAB with the CIEDE2000 difference (Sharma, Wu and Dalal 2005, eqs. 1-22), the standard
for "how different do these two colours look" (about 1 is just noticeable, above ~10 clearly another colour).
sRGB is converted with the D65 white point (IEC 61966-2-1 transfer curve, then XYZ -> Lab). A part's pixels are
those the ground truth's label map gives it (aa/synthetic writes one per frame: shirt, sleeves, trousers, skin,
hair, hat, shoes), read at the same places in the generated frames:

    part mean error   CIEDE2000 between the part's mean Lab colour in the generated and the true frames (over the
                      whole clip): is the shirt green?
    part pixel error  the mean over the part's pixels of the per-pixel CIEDE2000: is every pixel right?

`hue_rotate` (the same as training's colour augmentation uses) turns the hue of every pixel, for the hue probe: a
reference and its ground truth recoloured alike, so a model that copies the reference's colours scores the same at
every angle.
"""
from __future__ import annotations

import numpy as np

from aa.synthetic.canvas import PARTS
from aa.training.augment import hue_rotate  # noqa: F401  (the hue probe's recolouring, as training's)

SCORED_PARTS = ("shirt", "sleeves", "trousers", "skin", "hair", "hat", "shoes")  # not "other" (details) or background
MIN_PIXELS = 16  # a part covering fewer pixels over a clip is not scored (a hat seen for one frame's edge)
_D65 = np.array([0.95047, 1.0, 1.08883])  # reference white, XYZ with Y = 1
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],  # linear sRGB -> XYZ (D65)
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])


def _unit(rgb: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] or float [0, 1] RGB -> float64 [0, 1]."""
    rgb = np.asarray(rgb)
    return rgb.astype(np.float64) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float64)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3), uint8 or float in [0, 1] -> CIELAB (..., 3) float64 (D65): L in [0, 100]."""
    c = _unit(rgb)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _D65
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference of Lab colours (..., 3) -> (...) (Sharma et al. 2005; kL = kC = kH = 1)."""
    L1, a1, b1 = np.moveaxis(np.asarray(lab1, np.float64), -1, 0)
    L2, a2, b2 = np.moveaxis(np.asarray(lab2, np.float64), -1, 0)
    c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_bar ** 7 / (c_bar ** 7 + 25.0 ** 7)))  # eq. 4
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360  # eq. 7 (0 where a' = b = 0: arctan2 gives 0)
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    dLp, dCp = L2 - L1, c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))  # eq. 10
    dh = np.where(c1p * c2p == 0, 0.0, dh)
    dHp = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh) / 2)
    L_bar, C_bar = (L1 + L2) / 2, (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_bar = np.where(np.abs(h1p - h2p) > 180, np.where(h_sum < 360, h_sum + 360, h_sum - 360), h_sum) / 2  # eq. 14
    h_bar = np.where(c1p * c2p == 0, h_sum, h_bar)
    t = (1 - 0.17 * np.cos(np.radians(h_bar - 30)) + 0.24 * np.cos(np.radians(2 * h_bar))
         + 0.32 * np.cos(np.radians(3 * h_bar + 6)) - 0.20 * np.cos(np.radians(4 * h_bar - 63)))
    d_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(C_bar ** 7 / (C_bar ** 7 + 25.0 ** 7))
    s_l = 1 + 0.015 * (L_bar - 50) ** 2 / np.sqrt(20 + (L_bar - 50) ** 2)
    s_c, s_h = 1 + 0.045 * C_bar, 1 + 0.015 * C_bar * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    return np.sqrt((dLp / s_l) ** 2 + (dCp / s_c) ** 2 + (dHp / s_h) ** 2 + r_t * (dCp / s_c) * (dHp / s_h))


def part_colour_errors(generated: np.ndarray, truth: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    """Per part of `SCORED_PARTS` covering at least MIN_PIXELS of the true labels (f, h, w): {"mean": part mean
    error, "pixel": part pixel error, "pixels": count}; generated and truth (f, h, w, 3) uint8 or [0, 1] floats."""
    generated, truth, labels = np.asarray(generated), np.asarray(truth), np.asarray(labels)
    if generated.shape != truth.shape or truth.shape[:-1] != labels.shape:
        raise ValueError(f"shapes differ: generated {generated.shape}, truth {truth.shape}, labels {labels.shape}")
    out = {}
    for part in SCORED_PARTS:
        mask = labels == PARTS[part]
        if mask.sum() < MIN_PIXELS:
            continue
        g, r = srgb_to_lab(generated[mask]), srgb_to_lab(truth[mask])  # (n, 3)
        out[part] = {"mean": float(ciede2000(g.mean(0), r.mean(0))), "pixel": float(ciede2000(g, r).mean()),
                     "pixels": int(mask.sum())}
    return out


def summary(errors: dict[str, dict[str, float]]) -> dict[str, float]:
    """The clip's two numbers: mean over its scored parts of the part mean error and of the part pixel error (NaN
    with no part scored)."""
    if not errors:
        return {"part_de": float("nan"), "part_de_px": float("nan")}
    return {"part_de": float(np.mean([e["mean"] for e in errors.values()])),
            "part_de_px": float(np.mean([e["pixel"] for e in errors.values()]))}
