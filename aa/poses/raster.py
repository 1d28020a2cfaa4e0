"""OpenCV's integer rasterisation rules for the four shapes the DWPose renderer draws, in numpy.

The released weights saw pose images drawn with `cv2.fillConvexPoly(cv2.ellipse2Poly(...))`, `cv2.circle(...,
thickness=-1)` and `cv2.line(..., thickness=2)` (8-connected, no antialiasing). PIL fills polygons with other edge
rules (a 2 px wide PIL line covers a third fewer pixels than OpenCV's), so these functions follow OpenCV's
`imgproc/src/drawing.cpp` (ellipse2Poly, FillConvexPoly, Line, Line2, ThickLine, Circle) step by step, as of
OpenCV 4.x (what DWPose users had in 2023). Checked pixel for pixel against OpenCV 5.0 on random shapes; the one known
difference: 5.0 clips a sub-pixel line that crosses the image border (the rim of a 2 px hand line cut by the border)
differently from the 4.x `clipLine` followed here, by a pixel.
Coordinates are (x, y); canvases are (h, w, 3) uint8 arrays drawn in place.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

XY_SHIFT = 16  # OpenCV's fixed-point precision for sub-pixel vertices
XY_ONE = 1 << XY_SHIFT

# OpenCV's sine table: sin of every whole degree, rounded to 7 decimals and stored as float32.
_SIN_TABLE = np.round(np.sin(np.deg2rad(np.arange(451))), 7).astype(np.float32).astype(np.float64)

Color = tuple[int, int, int]


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero; Python's // floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def ellipse_polygon(center: tuple[int, int], axes: tuple[int, int], angle: int) -> list[tuple[int, int]]:
    """Vertices of a full ellipse one degree apart, as `cv2.ellipse2Poly(center, axes, angle, 0, 360, 1)`."""
    while angle < 0:
        angle += 360
    while angle > 360:
        angle -= 360
    cos_a, sin_a = _SIN_TABLE[450 - angle], _SIN_TABLE[angle]
    degrees = np.arange(361)
    x = axes[0] * _SIN_TABLE[450 - degrees]
    y = axes[1] * _SIN_TABLE[degrees]
    px = np.rint(center[0] + x * cos_a - y * sin_a).astype(np.int64)  # rint rounds half to even, like cvRound
    py = np.rint(center[1] + x * sin_a + y * cos_a).astype(np.int64)
    points = [(int(px[0]), int(py[0]))]
    for p in zip(px[1:].tolist(), py[1:].tolist()):
        if p != points[-1]:  # consecutive duplicates are dropped
            points.append(p)
    return [tuple(center)] * 2 if len(points) == 1 else points  # a degenerate ellipse is its centre twice


def _put(canvas: np.ndarray, xs: np.ndarray, ys: np.ndarray, color: Color) -> None:
    """Set the pixels (xs, ys) that fall inside the canvas."""
    h, w = canvas.shape[:2]
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    canvas[ys[inside], xs[inside]] = color


def _clip_line(width: int, height: int, p0: tuple[int, int], p1: tuple[int, int]
               ) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Cut a segment to the box [0, width) x [0, height) (OpenCV `clipLine`, which interpolates in double
    precision and truncates); None when it misses the box."""
    right, bottom = width - 1, height - 1
    (x1, y1), (x2, y2) = p0, p1

    def code(x: int, y: int) -> int:
        return (x < 0) + (x > right) * 2 + (y < 0) * 4 + (y > bottom) * 8

    c1, c2 = code(x1, y1), code(x2, y2)
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            a = 0 if c1 < 8 else bottom
            x1 += int(float(a - y1) * (x2 - x1) / (y2 - y1))
            y1, c1 = a, (x1 < 0) + (x1 > right) * 2
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            x2 += int(float(a - y2) * (x2 - x1) / (y2 - y1))
            y2, c2 = a, (x2 < 0) + (x2 > right) * 2
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                a = 0 if c1 == 1 else right
                y1 += int(float(a - x1) * (y2 - y1) / (x2 - x1))
                x1, c1 = a, 0
            if c2:
                a = 0 if c2 == 1 else right
                y2 += int(float(a - x2) * (y2 - y1) / (x2 - x1))
                x2, c2 = a, 0
    return ((x1, y1), (x2, y2)) if (c1 | c2) == 0 else None


def _hline(canvas: np.ndarray, y: int, x1: int, x2: int, color: Color) -> None:
    """Fill row y from x1 to x2 inclusive, clipped to the canvas."""
    h, w = canvas.shape[:2]
    if 0 <= y < h and x2 >= 0 and x1 < w:
        canvas[y, max(x1, 0):min(x2, w - 1) + 1] = color


def lines(canvas: np.ndarray, starts: list[tuple[int, int]], ends: list[tuple[int, int]], color: Color) -> None:
    """1 px 8-connected lines between integer points (OpenCV `Line`: Bresenham, drawn left to right), all at once."""
    h, w = canvas.shape[:2]
    segments = []
    for p0, p1 in zip(starts, ends):
        inside = 0 <= p0[0] < w and 0 <= p0[1] < h and 0 <= p1[0] < w and 0 <= p1[1] < h
        clipped = (p0, p1) if inside else _clip_line(w, h, p0, p1)
        if clipped is not None:
            segments.append((*clipped[0], *clipped[1]))
    if not segments:
        return
    x0, y0, x1, y1 = np.array(segments, dtype=np.int64).T
    flip = x1 < x0  # walk every line left to right
    x0, y0, x1, y1 = np.where(flip, x1, x0), np.where(flip, y1, y0), np.where(flip, x0, x1), np.where(flip, y0, y1)
    dx, dy = x1 - x0, np.abs(y1 - y0)
    sy = np.where(y1 < y0, -1, 1)
    steep = dy > dx
    major, minor = np.where(steep, dy, dx), np.where(steep, dx, dy)
    k = np.arange(major.max() + 1)[None, :]  # (lines, steps)
    # The iterator steps the minor axis when its error term is negative; the number of such steps before step k
    # is ceil((2 minor k - major) / (2 major)) in closed form.
    m = -((major[:, None] - 2 * minor[:, None] * k) // np.maximum(2 * major[:, None], 1))
    xs = x0[:, None] + np.where(steep[:, None], m, k)
    ys = y0[:, None] + sy[:, None] * np.where(steep[:, None], k, m)
    valid = k <= major[:, None]
    _put(canvas, xs[valid], ys[valid], color)


def _line_fixed(canvas: np.ndarray, p0: tuple[int, int], p1: tuple[int, int], color: Color) -> None:
    """1 px line between 16.16 fixed-point points (OpenCV `Line2`: pixel centres nearest the exact line)."""
    clipped = _clip_line(canvas.shape[1] << XY_SHIFT, canvas.shape[0] << XY_SHIFT, p0, p1)
    if clipped is None:
        return
    (x0, y0), (x1, y1) = clipped
    dx, dy = x1 - x0, y1 - y0
    if abs(dx) > abs(dy):  # x-major: walk x from left to right
        if dx < 0:
            x0, y0, x1, y1 = x1, y1, x0, y0
        step = _cdiv((y1 - y0) << XY_SHIFT, abs(dx) | 1)
        k = np.arange(((x1 - x0) >> XY_SHIFT) + 1)
        xs, ys = ((x0 + XY_ONE // 2) >> XY_SHIFT) + k, (y0 + XY_ONE // 2 + k * step) >> XY_SHIFT
    else:  # y-major: walk y from top to bottom
        if dy < 0:
            x0, y0, x1, y1 = x1, y1, x0, y0
        step = _cdiv((x1 - x0) << XY_SHIFT, abs(dy) | 1)
        k = np.arange(((y1 - y0) >> XY_SHIFT) + 1)
        xs, ys = (x0 + XY_ONE // 2 + k * step) >> XY_SHIFT, ((y0 + XY_ONE // 2) >> XY_SHIFT) + k
    end = np.array([(x1 + XY_ONE // 2) >> XY_SHIFT]), np.array([(y1 + XY_ONE // 2) >> XY_SHIFT])
    _put(canvas, np.concatenate([end[0], xs]), np.concatenate([end[1], ys]), color)


def fill_convex_poly(canvas: np.ndarray, points: list[tuple[int, int]], color: Color, shift: int = 0) -> None:
    """Fill a convex polygon whose vertices carry `shift` fractional bits (OpenCV `FillConvexPoly`, LINE_8):
    its outline is drawn as lines, then each row is filled between the two edges walked down from the top vertex."""
    v = [(int(x), int(y)) for x, y in points]
    n = len(v)
    up = XY_SHIFT - shift
    if shift == 0:
        lines(canvas, v[-1:] + v[:-1], v, color)
    else:
        for p0, p1 in zip(v[-1:] + v[:-1], v):
            _line_fixed(canvas, (p0[0] << up, p0[1] << up), (p1[0] << up, p1[1] << up), color)

    delta = (1 << shift) >> 1
    ys_raw = [y for _, y in v]
    top = ys_raw.index(min(ys_raw))
    xmin, xmax = (min(x for x, _ in v) + delta) >> shift, (max(x for x, _ in v) + delta) >> shift
    ymin, ymax = (min(ys_raw) + delta) >> shift, (max(ys_raw) + delta) >> shift
    h, w = canvas.shape[:2]
    if n < 3 or xmax < 0 or ymax < 0 or xmin >= w or ymin >= h:
        return
    ymax = min(ymax, h - 1)
    # Two edges walk from the top vertex, one forward and one backward through the vertex list.
    edges = [{"idx": top, "di": 1, "x": -XY_ONE, "dx": 0, "ye": ymin},
             {"idx": top, "di": n - 1, "x": -XY_ONE, "dx": 0, "ye": ymin}]
    remaining = n
    y = ymin
    while True:
        for e in edges:
            if y < e["ye"]:
                continue
            idx0, idx = e["idx"], (e["idx"] + e["di"]) % n
            while True:
                exhausted = remaining <= 0
                remaining -= 1
                if exhausted:
                    break
                ty = (v[idx][1] + delta) >> shift
                if ty > y:  # next vertex below this row: walk this edge from its upper vertex
                    xs, xe = v[idx0][0] << up, v[idx][0] << up
                    e.update(ye=ty, dx=_cdiv((xe - xs) * 2 + (ty - y), 2 * (ty - y)), x=xs, idx=idx)
                    break
                idx0, idx = idx, (idx + e["di"]) % n
        if remaining < 0:
            break
        left, right = sorted(edges, key=lambda e: e["x"])
        if y >= 0:
            _hline(canvas, y, (left["x"] + XY_ONE // 2) >> XY_SHIFT, (right["x"] + XY_ONE // 2) >> XY_SHIFT, color)
        for e in edges:
            e["x"] += e["dx"]
        y += 1
        if y > ymax:
            break


@lru_cache(maxsize=None)
def _disk_spans(radius: int) -> tuple[tuple[int, int], ...]:
    """(row offset, half width) of OpenCV's filled midpoint circle of this radius."""
    spans: dict[int, int] = {}
    err, dx, dy, plus, minus = 0, radius, 0, 1, 2 * radius - 1
    while dx >= dy:
        for row, half in ((dy, dx), (-dy, dx), (dx, dy), (-dx, dy)):
            spans[row] = max(spans.get(row, -1), half)
        dy += 1
        err += plus
        plus += 2
        if err > 0:
            err -= minus
            dx -= 1
            minus -= 2
    return tuple(sorted(spans.items()))


def fill_circle(canvas: np.ndarray, center: tuple[int, int], radius: int, color: Color) -> None:
    """Filled circle at an integer centre (OpenCV `Circle`, as `cv2.circle(..., thickness=-1)`)."""
    cx, cy = center
    for row, half in _disk_spans(radius):
        _hline(canvas, cy + row, cx - half, cx + half, color)


def thick_line(canvas: np.ndarray, p0: tuple[int, int], p1: tuple[int, int], color: Color, thickness: int) -> None:
    """Line of integer endpoints with thickness > 1 (OpenCV `ThickLine`): a sub-pixel rectangle of half-width
    thickness / 2 around the segment, plus round caps of radius round(thickness / 2)."""
    assert thickness > 1, f"thick_line draws thickness > 1, got {thickness}"
    (x0, y0), (x1, y1) = (p0[0] << XY_SHIFT, p0[1] << XY_SHIFT), (p1[0] << XY_SHIFT, p1[1] << XY_SHIFT)
    dx, dy = (x0 - x1) / XY_ONE, (y1 - y0) / XY_ONE
    half = thickness << (XY_SHIFT - 1)
    r2 = dx * dx + dy * dy
    if abs(r2) > np.finfo(np.float64).eps:
        r = (half + (thickness & 1) * XY_ONE * 0.5) / math.sqrt(r2)
        ox, oy = int(np.rint(dy * r)), int(np.rint(dx * r))
        rect = [(x0 + ox, y0 + oy), (x0 - ox, y0 - oy), (x1 - ox, y1 - oy), (x1 + ox, y1 + oy)]
        fill_convex_poly(canvas, rect, color, shift=XY_SHIFT)
    cap = (half + XY_ONE // 2) >> XY_SHIFT
    for p in (p0, p1):
        fill_circle(canvas, p, cap, color)
