"""Image-mode conversion and file ordering shared by the readers and the CLIP preprocessing, and the contact sheet
sample.py and the web app write beside a video, atomically: PIL only, no video library, so building a network never
needs PyAV."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image


def natural_key(name: str) -> list:
    """'frame_2.png' sorts before 'frame_10.png'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def pil_to_rgb(image: Image.Image) -> Image.Image:
    """RGB as is; transparency (RGBA, LA, PA, P or L with a transparent colour) composited on white; L, P, CMYK,
    YCbCr converted. 16-bit and float modes are refused: their range is not 0..255."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        raise ValueError(f"PIL mode {image.mode!r} (16/32-bit) is not an 8-bit image: convert it to RGB yourself, "
                         "choosing how to map its range to 0..255")
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def contact_sheet(reference: np.ndarray, poses: np.ndarray, frames: np.ndarray, columns: int = 8) -> Image.Image:
    """Row 1: the reference then evenly spaced poses; row 2: blank then the frames generated for them."""
    idx = np.linspace(0, len(frames) - 1, min(columns, len(frames))).round().astype(int)
    h, w = frames.shape[1:3]
    sheet = Image.new("RGB", ((len(idx) + 1) * w, 2 * h), "white")
    sheet.paste(Image.fromarray(reference).resize((w, h)), (0, 0))
    for j, i in enumerate(idx, start=1):
        sheet.paste(Image.fromarray(poses[i]), (j * w, 0))
        sheet.paste(Image.fromarray(frames[i]), (j * w, h))
    return sheet


def save_png(image: Image.Image, path: Path) -> None:
    """Write a PNG atomically: beside `path`, then renamed; nothing is left on failure."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format="PNG")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
