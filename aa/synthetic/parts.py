"""The parts of a character, each drawn through the skeleton's points: torso, limbs, head, hair, accessories.

Every function paints one part on a `Canvas`, labelling each pixel with what it shows (canvas.PARTS: shirt,
sleeves, trousers, skin, hair, hat, shoes, other); body parts claim the owner map (used for keypoint visibility),
hair and accessories don't. `render.py` decides the order.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from aa.synthetic.canvas import (
    OUTLINE,
    PARTS,
    Canvas,
    Capsule,
    Window,
    capsules,
    fabric,
    frustum,
    paint_capsules,
    rgb,
    shade,
    wrap,
)
from aa.synthetic.character import Character
from aa.synthetic.shapes import inside_polygon, logo, segment_distance
from aa.synthetic.skeleton import EYE_CENTRES, FACE_2D, GROUND, Figure, PoseState

_WAIST = 0.13  # where the shirt ends, as a fraction of the torso from the hip line up
_SHOE, _HAND = 8.0, 9.0  # capsule positions past a limb's 0 (root) .. 2 (end) that mark the shoe and the hand


def draw_torso(cv: Canvas, ch: Character, fig: Figure) -> None:
    """Neck, then the shirt/trousers cylinder with its pattern, chest logo, belt and bag strap, then the scarf."""
    P, k = fig.points, fig.scale
    ow = OUTLINE * k
    neck_r = 0.42 * ch.head_radius * k
    win = cv.around(np.stack([P["neck"], P["head"]]), neck_r + 1)
    if win is not None:
        d, _ = segment_distance(win.x, win.y, P["neck"], P["head"])
        cv.paint(win, d <= neck_r, shade(rgb(ch.skin), 1 - d / neck_r, d > neck_r - ow), "skin")
    a_top, a_bot = ch.shoulder + 0.8 * ch.arm_radius, ch.hip + 0.9 * ch.leg_radius
    win = cv.around(np.stack([P["pelvis"], P["neck"]]), (a_top + ch.arm_radius) * k + 2)
    if win is None:
        return
    length = ch.torso * k
    inside, v, phi, q, to_edge = frustum(win, P["pelvis"], P["neck"], a_bot * k, a_top * k, ch.depth, fig.yaw,
                                         -0.03 / ch.torso, 1 + 0.6 * ch.arm_radius / ch.torso,
                                         round_top=1.2 * ch.arm_radius * k)
    a_mid = (a_top + a_bot) / 2
    u, vf = phi * a_mid * (1 + ch.depth) / 2, v * ch.torso
    shirt = v >= _WAIST
    colour = np.where(shirt[..., None], fabric(ch.shirt, u, vf), fabric(ch.trousers, u, vf))
    label = np.where(shirt, PARTS["shirt"], PARTS["trousers"])
    front = np.abs(phi) < np.pi / 2
    if ch.logo:
        size = 0.45 * a_mid
        mark = logo(ch.logo, u / size, (0.68 * ch.torso - vf) / size) & front & shirt
        colour = np.where(mark[..., None], rgb(ch.logo_colour), colour)
        label = np.where(mark, PARTS["other"], label)
    if ch.bag:
        target = np.where(front, 2.0 * (v - 0.5), np.pi - 2.0 * (v - 0.5))
        strap = (np.abs(wrap(phi - target)) * a_mid < 0.022) & (v > 0.05)
        colour = np.where(strap[..., None], rgb(ch.bag) * 0.8, colour)
        label = np.where(strap, PARTS["other"], label)
    if ch.belt:
        band = np.abs(v - _WAIST) * length < 0.022 * k
        buckle = band & (np.abs(phi) < 0.22)
        colour = np.where(band[..., None], rgb(ch.belt), colour)
        colour = np.where(buckle[..., None], np.float32([225, 200, 90]), colour)
        label = np.where(band, PARTS["other"], label)
    cv.paint(win, inside, shade(colour, np.sqrt(1 - q * q), to_edge < ow), label, "torso")
    if ch.scarf:
        draw_scarf(cv, ch, fig)


def _hand_parts(hand: np.ndarray, length: float) -> list[Capsule]:
    """Capsules for a hand: palm and fingers through the 21 keypoints, or a mitten over them when it is tiny."""
    palm = (hand[0], hand[[5, 9, 13, 17]].mean(0) * 0.8 + hand[0] * 0.2, 0.26 * length, _HAND, _HAND)
    if length < 10:  # under ~10 px fingers are sub-pixel: one capsule wrist -> fingertips covering every point
        tip = hand[[8, 12, 16]].mean(0)
        d, _ = segment_distance(hand[:, 0], hand[:, 1], hand[0], tip)
        return [(hand[0], tip, max(float(d.max()) + 0.5, 0.22 * length), _HAND, _HAND)]
    fingers = [(hand[j], hand[j + 1], 0.085 * length, _HAND, _HAND)
               for f in range(5) for j in range(1 + 4 * f, 4 + 4 * f)]
    return [palm] + fingers


def draw_limb(cv: Canvas, ch: Character, fig: Figure, name: str) -> None:
    """An arm (shoulder-elbow-wrist, then the hand) or a leg (hip-knee-ankle, shoe), clothed up to a point."""
    P, k = fig.points, fig.scale
    side, kind = name.split("_")
    if kind == "arm":
        joints = [P[f"{side}_shoulder"], P[f"{side}_elbow"], P[f"{side}_wrist"]]
        radii = [ch.arm_radius * k, 0.85 * ch.arm_radius * k]
        extra, garment, reach, clothed = [], ch.shirt, ch.sleeve, PARTS["sleeves"]
    else:
        joints = [P[f"{side}_hip"], P[f"{side}_knee"], P[f"{side}_ankle"]]
        radii = [ch.leg_radius * k, 0.8 * ch.leg_radius * k]
        extra = [(P[f"{side}_heel"], P[f"{side}_toe"], ch.foot_radius * k, _SHOE, _SHOE)]
        garment, reach, clothed = ch.trousers, ch.legwear, PARTS["trousers"]
    parts = [(joints[0], joints[1], radii[0], 0.0, 1.0), (joints[1], joints[2], radii[1], 1.0, 2.0)] + extra

    def colour_of(win: Window, param: np.ndarray) -> np.ndarray:
        u, v = (win.x - P["pelvis"][0]) / k, (win.y - P["pelvis"][1]) / k
        colour = np.where((param < reach)[..., None], fabric(garment, u, v), rgb(ch.skin))
        return np.where((param == _SHOE)[..., None], rgb(ch.shoes), colour)

    def label_of(param: np.ndarray) -> np.ndarray:
        return np.where(param == _SHOE, PARTS["shoes"], np.where(param < reach, clothed, PARTS["skin"]))

    paint_capsules(cv, parts, colour_of, label_of, name, OUTLINE * k)
    if kind == "arm":
        paint_capsules(cv, _hand_parts(fig.hands[side], ch.hand * k), lambda *_: rgb(ch.skin), lambda _: "skin",
                       name, OUTLINE * k)


def draw_head(cv: Canvas, ch: Character, fig: Figure) -> None:
    """Skin ellipsoid with hair by style, eyes, brows, nose, mouth and glasses on the side facing the camera."""
    h = fig.head
    win = cv.around(h.centre[None], max(h.rx, h.ry) + 2)
    if win is None:
        return
    inside, p, w = h.to_local(win.x, win.y)
    lx, ly, lz = p[..., 0], p[..., 1], p[..., 2]
    colour = np.broadcast_to(rgb(ch.skin), lx.shape + (3,)).copy()
    label = np.full(lx.shape, PARTS["skin"], np.uint8)
    face = lz > 0

    def put(mask: np.ndarray, c: np.ndarray, part: str = "other") -> None:
        colour[mask] = c
        label[mask] = PARTS[part]

    nose_d, _ = segment_distance(lx, ly, FACE_2D[28], FACE_2D[30])
    put(face & (nose_d < 0.035), rgb(ch.skin) * 0.8, "skin")
    lips, mouth = FACE_2D[48:60], FACE_2D[60:68]
    put(face & inside_polygon(lx, ly, lips), np.float32([170, 60, 60]) * 0.5 + rgb(ch.skin) * 0.3)
    put(face & inside_polygon(lx, ly, mouth), np.float32([70, 20, 25]))
    for e, c in zip((FACE_2D[36:42], FACE_2D[42:48]), EYE_CENTRES):
        put(face & inside_polygon(lx, ly, e), np.float32([245, 245, 245]))
        r2 = (lx - c[0]) ** 2 + (ly - c[1]) ** 2
        put(face & (r2 < 0.075 ** 2), rgb(ch.eyes))
        put(face & (r2 < 0.04 ** 2), np.float32([10, 10, 10]))
    hair = _hair_mask(ch.hair_style, lx, ly, lz)
    for brow in (FACE_2D[17:22], FACE_2D[22:27]):
        for a, b in zip(brow[:-1], brow[1:]):
            put(face & (segment_distance(lx, ly, a, b)[0] < 0.035), rgb(ch.hair) * 0.7, "hair")
    put(hair, rgb(ch.hair), "hair")
    if ch.glasses:
        ring = np.zeros(lx.shape, bool)
        for c in EYE_CENTRES:
            ring |= np.abs(np.hypot(lx - c[0], ly - c[1]) - 0.17) < 0.03
        ring |= (np.abs(ly - 0.0) < 0.025) & (np.abs(lx) < 0.2)
        put(face & ring, rgb(ch.glasses))
    edge = w < np.sqrt(1 - (1 - OUTLINE * fig.scale / h.rx) ** 2)
    cv.paint(win, inside, shade(colour, 0.4 + w, edge), label, "head")


def _hair_mask(style: str, lx: np.ndarray, ly: np.ndarray, lz: np.ndarray) -> np.ndarray:
    """Which points of the head sphere (head coordinates, y down, z forward) are covered by hair."""
    if style == "bald":
        return np.zeros(lx.shape, bool)
    if style in ("short", "bun", "ponytail"):
        return ly < 0.05 - 0.42 * lz
    if style == "long":
        return (ly < 0.3 - 0.55 * lz) | ((np.abs(lx) > 0.72) & (ly < 0.85)) | (lz < -0.2)
    if style == "afro":
        return ly < 0.25 - 0.5 * lz
    raise ValueError(f"unknown hair style {style!r}")


def hair_volume(ch: Character, fig: Figure) -> list[tuple[float, Callable[[Canvas], None]]]:
    """Hair outside the head sphere (afro, long hair, bun, ponytail) as capsules anchored in head coordinates."""
    h = fig.head
    shapes = {"afro": [((0, -0.25, -0.3), (0, -0.25, -0.3), 1.32)],
              "long": [((0, -0.2, -0.55), (0, 1.75, -0.6), 0.95)],
              "bun": [((0, -0.82, -0.62), (0, -0.82, -0.62), 0.42)],
              "ponytail": [((0, -0.35, -0.95), (0, 0.35, -1.25), 0.24), ((0, 0.35, -1.25), (0, 1.1, -1.3), 0.2)],
              }.get(ch.hair_style, [])
    items = []
    for a, b, r in shapes:
        ends = h.to_screen(np.array([a, b], float))
        depth = fig.points["head"][2] + ends[:, 2].mean() * h.rx
        if ch.hair_style == "long":  # hangs down the back: over the torso when seen from behind, under the head
            depth = min(depth, fig.points["head"][2] + 0.01 * fig.scale)

        def draw(cv: Canvas, ends: np.ndarray = ends, r: float = r) -> None:
            win = cv.around(ends, r * h.rx + 2)
            if win is not None:
                d, _ = segment_distance(win.x, win.y, ends[0], ends[1])
                rr = r * h.rx
                cv.paint(win, d <= rr, shade(rgb(ch.hair), 1 - d / rr, d > rr - OUTLINE * fig.scale), "hair")
        items.append((depth, draw))
    return items


def draw_hat(cv: Canvas, ch: Character, fig: Figure) -> None:
    """A hat on top of the head (symmetric about the vertical axis, so only the head's tilt matters)."""
    h = fig.head
    win = cv.around(h.centre[None], 2.4 * max(h.rx, h.ry) + 2)
    if win is None or ch.hat is None:
        return
    c, s = np.cos(h.roll), np.sin(h.roll)
    dx, dy = win.x - h.centre[0], win.y - h.centre[1]
    u, v = (dx * c + dy * s) / h.rx, (-dx * s + dy * c) / h.ry  # head-aligned, unit = head radius, y down
    if ch.hat == "beanie":
        mask = (u * u + (v + 0.12) ** 2 <= 1.12 ** 2) & (v < -0.3)
        band = mask & (v > -0.5)
    elif ch.hat == "tophat":
        mask = ((np.abs(u) < 0.75) & (v < -0.55) & (v > -1.9)) | ((np.abs(u) < 1.45) & (np.abs(v + 0.62) < 0.1))
        band = mask & (np.abs(u) < 0.75) & (v > -0.95) & (v < -0.72)
    else:  # cap: a dome with a flat brim all round
        dome = (u * u + (v + 0.35) ** 2 <= 1.05 ** 2) & (v < -0.35)
        mask = dome | ((np.abs(u) < 1.35) & (np.abs(v + 0.38) < 0.07))
        band = np.zeros(mask.shape, bool)
    colour = np.where(band[..., None], rgb(ch.hat_colour) * 0.6, rgb(ch.hat_colour))
    cv.paint(win, mask, shade(colour, np.ones(mask.shape), np.zeros(mask.shape, bool)), "hat")


def draw_scarf(cv: Canvas, ch: Character, fig: Figure) -> None:
    """A band round the neck, and a tail hanging down the chest when the chest faces the camera."""
    P, k = fig.points, fig.scale
    parts = [(P["scarf_right"], P["scarf_left"], 0.045 * k, 0.0, 1.0)]
    if P["scarf_tail"][2] > P["neck"][2]:
        parts.append((P["scarf_tail"], P["scarf_end"], 0.03 * k, 1.0, 2.0))
    win = cv.around(np.stack([p for part in parts for p in part[:2]]), 0.05 * k + 2)
    if win is not None:
        sd, _, facing, _ = capsules(win, parts)
        cv.paint(win, sd <= 0, shade(rgb(ch.scarf), facing, sd > -OUTLINE * k), "other")


def draw_skirt(cv: Canvas, ch: Character, fig: Figure) -> None:
    """A flared cone of the trousers' fabric from the waist to mid-thigh, narrowing as the body turns."""
    P, k = fig.points, fig.scale
    top = P["pelvis"] - [0, 0.05 * k, 0]
    bottom = P["pelvis"] + [0, 0.55 * ch.thigh * k, 0]
    a0, a1 = (ch.hip + 1.0 * ch.leg_radius) * k, (ch.hip + 2.2 * ch.leg_radius) * k
    win = cv.around(np.stack([top, bottom]), a1 + 2)
    if win is None:
        return
    inside, v, phi, q, to_edge = frustum(win, bottom, top, a1, a0, ch.depth, fig.yaw, 0.0, 1.0)
    colour = fabric(ch.trousers, phi * a1 / k, v * 0.6 * ch.thigh)
    cv.paint(win, inside, shade(colour, np.sqrt(1 - q * q), to_edge < OUTLINE * k), "trousers")


def draw_bag(cv: Canvas, ch: Character, fig: Figure) -> None:
    """A rounded box with a flap hanging in front of the right hip (its strap is drawn on the torso)."""
    k, c = fig.scale, fig.points["bag"]
    half_w, half_h = 0.06 * k * np.sqrt(np.cos(fig.yaw) ** 2 + (0.5 * np.sin(fig.yaw)) ** 2), 0.05 * k
    win = cv.window(c[0] - half_w - 2, c[0] + half_w + 2, c[1] - half_h - 2, c[1] + half_h + 2)
    if win is None:
        return
    dx, dy = np.abs(win.x - c[0]) / half_w, np.abs(win.y - c[1]) / half_h
    mask = dx ** 4 + dy ** 4 <= 1
    flap = (win.y - c[1]) < -0.2 * half_h
    colour = np.where(flap[..., None], rgb(ch.bag) * 0.8, rgb(ch.bag))
    cv.paint(win, mask, shade(colour, 1 - 0.5 * dx, dx ** 4 + dy ** 4 > (1 - OUTLINE * k / half_h) ** 4),
             "other")


def draw_shadow(cv: Canvas, fig: Figure, state: PoseState, height: int) -> None:
    """A soft dark ellipse on the ground under the character, fainter as it jumps."""
    k = fig.scale
    cx, cy = fig.points["pelvis"][0], GROUND * height
    rx, ry = 0.2 * k, 0.035 * k
    win = cv.window(cx - rx - 1, cx + rx + 1, cy - ry - 1, cy + ry + 1)
    if win is not None:
        r2 = ((win.x - cx) / rx) ** 2 + ((win.y - cy) / ry) ** 2
        dark = np.clip(1 - r2, 0, 1) * 0.35 * max(0.0, 1 - 4 * state.lift)
        cv.rgb[win.ys, win.xs] *= (1 - dark)[..., None].astype(np.float32)
