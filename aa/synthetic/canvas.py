"""The drawing surface: a supersampled float canvas with an owner map, and per-pixel shape helpers.

Geometry is in output pixels with pixel centres at integer coordinates (the OpenPose convention); the canvas holds
`ss` x `ss` samples per output pixel and is box-filtered down at the end, which is the antialiasing.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from aa.synthetic.character import Background, Garment
from aa.synthetic.shapes import pattern, segment_distance

OWNERS = {"torso": 1, "head": 2, "right_arm": 3, "left_arm": 4, "right_leg": 5, "left_leg": 6}
# What each pixel shows, for colour metrics per part: the label of the last paint that covered it. "other" is every
# small or accessory detail (eyes, mouth, nose shading, glasses, logo, belt, strap, scarf, bag); 0 the background
# (and the ground shadow).
PARTS = {"background": 0, "shirt": 1, "sleeves": 2, "trousers": 3, "skin": 4, "hair": 5, "hat": 6, "shoes": 7,
         "other": 8}
MIXED = 255  # an output pixel whose samples show more than one part (edges): in no part's mask
OUTLINE = 0.009  # outline width, figure units
# A capsule: end points a, b (pixels, (2+,)), radius (pixels), and a position along the part at a and at b
# (interpolated per pixel: limbs use 0 at the root, 1 at the elbow/knee, 2 at the wrist/ankle, for sleeve lengths).
Capsule = tuple[np.ndarray, np.ndarray, float, float, float]


def supersampling(width: int, height: int) -> int:
    """Drawing resolution factor: enough for clean edges on small frames, cheap on large ones."""
    return 3 if min(width, height) < 256 else 2


@dataclass
class Window:
    """A rectangle of the supersampled canvas, with pixel-centre coordinates in output pixels."""

    ys: slice
    xs: slice
    x: np.ndarray
    y: np.ndarray


class Canvas:
    """Supersampled RGB float canvas plus the owner map used for keypoint visibility."""

    def __init__(self, backdrop: np.ndarray, ss: int) -> None:
        self.rgb = backdrop.copy()
        self.owner = np.zeros(backdrop.shape[:2], np.uint8)
        self.label = np.zeros(backdrop.shape[:2], np.uint8)
        self.ss = ss

    def window(self, x0: float, x1: float, y0: float, y1: float) -> Window | None:
        """The canvas pixels whose centres may fall in [x0, x1] x [y0, y1] (output pixels); None if off-canvas."""
        s, (hs, ws) = self.ss, self.owner.shape
        i0, i1 = max(int(np.floor((y0 + 0.5) * s)) - 1, 0), min(int(np.ceil((y1 + 0.5) * s)) + 1, hs)
        j0, j1 = max(int(np.floor((x0 + 0.5) * s)) - 1, 0), min(int(np.ceil((x1 + 0.5) * s)) + 1, ws)
        if i0 >= i1 or j0 >= j1:
            return None
        y, x = np.mgrid[i0:i1, j0:j1].astype(np.float64)
        return Window(slice(i0, i1), slice(j0, j1), (x + 0.5) / s - 0.5, (y + 0.5) / s - 0.5)

    def around(self, points: np.ndarray, margin: float) -> Window | None:
        """The window around (n, 2+) points, grown by `margin` output pixels."""
        p = np.asarray(points)[:, :2]
        return self.window(p[:, 0].min() - margin, p[:, 0].max() + margin, p[:, 1].min() - margin,
                           p[:, 1].max() + margin)

    def paint(self, win: Window, mask: np.ndarray, colour: np.ndarray, label: str | np.ndarray,
              owner: str | None = None) -> None:
        """Cover `mask` with `colour` ((3,) or per-pixel (..., 3)) and `label` (a PARTS name, or per-pixel PARTS
        values); body parts also claim the owner map."""
        colour = np.broadcast_to(np.asarray(colour, np.float32), mask.shape + (3,))
        region = self.rgb[win.ys, win.xs]
        region[mask] = colour[mask]
        labels = np.broadcast_to(np.asarray(PARTS[label] if isinstance(label, str) else label, np.uint8), mask.shape)
        self.label[win.ys, win.xs][mask] = labels[mask]
        if owner is not None:
            self.owner[win.ys, win.xs][mask] = OWNERS[owner]

    def owner_at(self, x: float, y: float) -> int:
        i, j = int(round((y + 0.5) * self.ss - 0.5)), int(round((x + 0.5) * self.ss - 0.5))
        hs, ws = self.owner.shape
        return int(self.owner[i, j]) if 0 <= i < hs and 0 <= j < ws else 0

    def labels(self) -> np.ndarray:
        """The part label of each output pixel, (h, w) uint8: a PARTS value where all its samples agree, else MIXED."""
        hs, ws = self.label.shape
        s = self.ss
        blocks = self.label.reshape(hs // s, s, ws // s, s).transpose(0, 2, 1, 3).reshape(hs // s, ws // s, s * s)
        first = blocks[..., 0]
        return np.where((blocks == first[..., None]).all(axis=-1), first, MIXED).astype(np.uint8)

    def image(self) -> np.ndarray:
        """Box-filter down to the output size: (h, w, 3) uint8."""
        hs, ws, _ = self.rgb.shape
        s = self.ss
        blocks = self.rgb.reshape(hs // s, s, ws // s, s, 3)
        small = sum(blocks[:, i, :, j] for i in range(s) for j in range(s)) / (s * s)  # 4x faster than .mean
        return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def rgb(c: tuple[int, int, int]) -> np.ndarray:
    return np.asarray(c, np.float32)


def fabric(g: Garment, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per-pixel colour of a garment at fabric coordinates (figure units): (..., 3)."""
    return np.where(pattern(g.pattern, u, v, g.period)[..., None], rgb(g.accent), rgb(g.colour))


@lru_cache(maxsize=16)
def background(bg: Background, width: int, height: int, ss: int) -> np.ndarray:
    """The static backdrop at drawing resolution, (h*ss, w*ss, 3) float32 (read-only: copy before drawing)."""
    y, x = np.mgrid[0:height * ss, 0:width * ss].astype(np.float32)
    x, y = (x + 0.5) / ss / height, (y + 0.5) / ss / height  # in frame heights
    c, a = rgb(bg.colour), 0.4 * rgb(bg.accent) + 0.6 * rgb(bg.colour)  # quiet patterns
    if bg.kind == "flat":
        out = np.broadcast_to(c, x.shape + (3,))
    elif bg.kind == "gradient":
        out = c + (rgb(bg.accent) - c) * y[..., None]
    elif bg.kind == "horizon":
        out = np.where((y > 0.78)[..., None], a, c)
    else:
        out = np.where(pattern({"checks": "checks", "stripes": "vstripes", "dots": "dots"}[bg.kind], x, y,
                               bg.period)[..., None], a, c)
    out = np.ascontiguousarray(out, dtype=np.float32)
    out.flags.writeable = False
    return out


def wrap(angle: np.ndarray) -> np.ndarray:
    """Angles into [-pi, pi)."""
    return np.remainder(angle + np.pi, 2 * np.pi) - np.pi


def shade(colour: np.ndarray, facing: np.ndarray, edge: np.ndarray) -> np.ndarray:
    """Soft cylinder/sphere shading (darker where the surface turns away) and a dark outline at the edge."""
    out = colour * (0.7 + 0.3 * np.clip(facing, 0.0, 1.0))[..., None]
    return np.where(edge[..., None], colour * 0.45, out)


def frustum(win: Window, bottom: np.ndarray, top: np.ndarray, a0: float, a1: float, depth: float, yaw: float,
            v_lo: float, v_hi: float, round_top: float = 0.0) -> tuple[np.ndarray, ...]:
    """Project a tapered elliptic cylinder (half-widths a0 at `bottom`, a1 at `top`, depth/width `depth`).

    Returns inside mask, height v (0 at bottom, 1 at top), surface angle phi (0 = front, +pi/2 = the person's left),
    lateral position s/R in [-1, 1], and the distance to the silhouette in pixels."""
    axis = top[:2] - bottom[:2]
    length = max(np.linalg.norm(axis), 1e-6)
    e = axis / length
    n = np.array([-e[1], e[0]])  # image +x when upright
    dx, dy = win.x - bottom[0], win.y - bottom[1]
    v = (dx * e[0] + dy * e[1]) / length
    s = dx * n[0] + dy * n[1]
    a = a0 + (a1 - a0) * np.clip(v, 0.0, 1.0)
    cy, sy = np.cos(yaw), np.sin(yaw)
    radius = a * np.sqrt(cy * cy + (depth * sy) ** 2)
    if round_top > 0:  # round the shoulders: shrink the half-width near the top with a quarter ellipse
        k = np.clip((v - (v_hi - round_top / length)) / (round_top / length), 0.0, 1.0)
        radius = radius - round_top * (1.0 - np.sqrt(1.0 - k * k))
    inside = (v >= v_lo) & (v <= v_hi) & (np.abs(s) <= radius)
    # the surface point at angle phi, (x, z) = (a sin phi, b cos phi), turned by yaw lands at s = R sin(phi + delta);
    # of the two angles that land on s, the pixel shows the one nearer the camera (larger z)
    delta = np.arctan2(depth * sy, cy)
    q = np.clip(s / np.maximum(a * np.sqrt(cy * cy + (depth * sy) ** 2), 1e-6), -1.0, 1.0)
    p1, p2 = np.arcsin(q) - delta, np.pi - np.arcsin(q) - delta
    z1 = -np.sin(p1) * sy + depth * np.cos(p1) * cy
    z2 = -np.sin(p2) * sy + depth * np.cos(p2) * cy
    phi = wrap(np.where(z1 >= z2, p1, p2))
    to_edge = np.minimum(np.minimum(radius - np.abs(s), (v - v_lo) * length), (v_hi - v) * length)
    return inside, v, phi, q, to_edge


def capsules(win: Window, parts: list[Capsule]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Union of capsules: signed distance (px, < 0 inside), and the nearest capsule's position, facing and radius."""
    best = np.full(win.x.shape, np.inf)
    param, facing, radius = np.zeros(win.x.shape), np.zeros(win.x.shape), np.zeros(win.x.shape)
    for a, b, r, p0, p1 in parts:
        d, t = segment_distance(win.x, win.y, a, b)
        better = d - r < best
        best = np.where(better, d - r, best)
        param = np.where(better, p0 + (p1 - p0) * t, param)
        facing = np.where(better, np.sqrt(np.clip(1 - (d / r) ** 2, 0, 1)), facing)
        radius = np.where(better, r, radius)
    return best, param, facing, radius


def paint_capsules(cv: Canvas, parts: list[Capsule], colour_of: Callable[[Window, np.ndarray], np.ndarray],
                   label_of: Callable[[np.ndarray], np.ndarray | str], owner: str, outline: float) -> None:
    """Paint a union of capsules with per-pixel colours `colour_of(window, param)` and labels `label_of(param)`."""
    win = cv.around(np.stack([p for part in parts for p in part[:2]]), max(part[2] for part in parts) + 2)
    if win is not None:
        sd, param, facing, radius = capsules(win, parts)
        edge = sd > -np.minimum(outline, 0.3 * radius)  # thin parts (fingers) keep their colour
        cv.paint(win, sd <= 0, shade(colour_of(win, param), facing, edge), label_of(param), owner)
