"""Image-mode conversion and file ordering shared by the readers and the CLIP preprocessing: PIL only, no video
library, so building a network never needs PyAV."""
from __future__ import annotations

import re

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
