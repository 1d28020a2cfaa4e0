"""Per-pixel shape tests used by the renderer: capsules, polygons, fabric patterns and chest logos.

All functions take coordinate arrays of any (equal) shape and return arrays of that shape.
"""
from __future__ import annotations

import numpy as np


def segment_distance(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each pixel to the segment a-b, and the position t in [0, 1] of the closest point."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    t = np.clip(((x - a[0]) * dx + (y - a[1]) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    return np.hypot(x - (a[0] + t * dx), y - (a[1] + t * dy)), t


def inside_polygon(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule: is each pixel inside the closed polygon (n, 2)?"""
    inside = np.zeros(np.broadcast(x, y).shape, bool)
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0)):
        crosses = (y0 > y) != (y1 > y)
        xi = x0 + (y - y0) * (x1 - x0) / (y1 - y0 if y1 != y0 else 1e-12)
        inside ^= crosses & (x < xi)
    return inside


def pattern(kind: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Where a fabric pattern shows its second colour; u across and v along the body, in the units of `period`."""
    pu, pv = u / period, v / period
    if kind == "solid":
        return np.zeros(np.broadcast(u, v).shape, bool)
    if kind == "hstripes":
        return (np.floor(pv) % 2) == 1
    if kind == "vstripes":
        return (np.floor(pu) % 2) == 1
    if kind == "diagonal":
        return (np.floor(pu + pv) % 2) == 1
    if kind == "checks":
        return ((np.floor(pu) + np.floor(pv)) % 2) == 1
    if kind == "dots":
        fu, fv = pu - np.floor(pu) - 0.5, pv - np.floor(pv) - 0.5
        return fu * fu + fv * fv < 0.3 ** 2
    raise ValueError(f"unknown pattern {kind!r}")


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    a = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], -1)


def _bar(x0: float, y0: float, x1: float, y1: float, half: float = 0.2) -> np.ndarray:
    """A rectangle of half-thickness `half` around the segment (x0, y0)-(x1, y1)."""
    d = np.array([x1 - x0, y1 - y0])
    n = np.array([-d[1], d[0]]) / np.linalg.norm(d) * half
    return np.array([[x0, y0] + n, [x1, y1] + n, [x1, y1] - n, [x0, y0] - n])


# Logos as unions of polygons in [-1, 1]^2 (y down); circle and ring are handled analytically.
_LOGO_POLYGONS = {
    "star": [_star()],
    "triangle": [np.array([[0.0, -0.95], [0.95, 0.75], [-0.95, 0.75]])],
    "diamond": [np.array([[0.0, -1.0], [0.75, 0.0], [0.0, 1.0], [-0.75, 0.0]])],
    "plus": [_bar(-0.9, 0, 0.9, 0, 0.27), _bar(0, -0.9, 0, 0.9, 0.27)],
    "X": [_bar(-0.7, -0.85, 0.7, 0.85), _bar(-0.7, 0.85, 0.7, -0.85)],
    "T": [_bar(-0.75, -0.75, 0.75, -0.75), _bar(0, -0.75, 0, 0.95)],
    "H": [_bar(-0.6, -0.9, -0.6, 0.9), _bar(0.6, -0.9, 0.6, 0.9), _bar(-0.6, 0, 0.6, 0)],
    "L": [_bar(-0.45, -0.95, -0.45, 0.75), _bar(-0.45, 0.75, 0.7, 0.75)],
}


def logo(kind: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Is each point (in logo units: the logo fills [-1, 1]^2, y down) inside the logo `kind`?"""
    r2 = x * x + y * y
    if kind == "circle":
        return r2 <= 0.9 ** 2
    if kind == "ring":
        return (r2 <= 0.95 ** 2) & (r2 >= 0.55 ** 2)
    if kind not in _LOGO_POLYGONS:
        raise ValueError(f"unknown logo {kind!r}")
    box = (np.abs(x) <= 1.0) & (np.abs(y) <= 1.0)
    out = np.zeros(box.shape, bool)
    if box.any():
        xs, ys = x[box], y[box]
        hit = np.zeros(xs.shape, bool)
        for poly in _LOGO_POLYGONS[kind]:
            hit |= inside_polygon(xs, ys, poly)
        out[box] = hit
    return out
