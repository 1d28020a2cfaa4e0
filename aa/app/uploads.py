"""What a browser may upload to app.py, checked before anything reads it whole: a size limit on every file, a pixel
limit on images, a frame limit on videos, and zips unpacked under names of our own (an archive's names never become
paths on the server)."""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from aa.io.image import natural_key
from aa.io.video import IMAGE_SUFFIXES, VideoError, video_info

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif")


@dataclass(frozen=True)
class Limits:
    """What one job may bring and ask for."""

    max_bytes: int = 50 * 2**20  # one uploaded file (a zip: also everything in it, unpacked)
    max_image_pixels: int = 4096 * 4096  # the reference image, and each pose image of a zip
    max_frames: int = 48  # frames animated (and pose files in a zip)
    max_output_pixels: int = 512 * 768  # width x height of the result

    def describe(self) -> str:
        return (f"uploads up to {self.max_bytes / 2**20:g} MB, images up to {self.max_image_pixels / 1e6:.1f} "
                f"megapixels, results up to {self.max_frames} frames and {self.max_output_pixels} pixels a frame")


def check_file(label: str, path: str | Path | None, limits: Limits, suffixes: tuple[str, ...]) -> Path:
    """An uploaded file that exists, has one of `suffixes` and is within the size limit; ValueError naming
    `label` (what the page calls the field) otherwise."""
    if path is None:
        raise ValueError(f"{label}: nothing uploaded")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{label}: the upload is gone (reload the page and upload it again)")
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{label}: {path.name!r} is not one of {', '.join(suffixes)}")
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise ValueError(f"{label}: {size / 2**20:.1f} MB, more than this server's limit of "
                         f"{limits.max_bytes / 2**20:g} MB")
    if size == 0:
        raise ValueError(f"{label}: the file is empty")
    return path


def check_image(label: str, path: str | Path | None, limits: Limits) -> Path:
    """An uploaded image whose header PIL can read and whose pixel count is within the limit (checked before the
    pixels are decoded)."""
    path = check_file(label, path, limits, IMAGE_SUFFIXES)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, Image.DecompressionBombError):
        raise ValueError(f"{label}: not an image that can be read ({path.suffix} file)") from None
    if w * h > limits.max_image_pixels:
        raise ValueError(f"{label}: {w}x{h} pixels, more than this server's limit of "
                         f"{limits.max_image_pixels / 1e6:g} megapixels")
    return path


def check_video(label: str, path: str | Path | None, limits: Limits) -> tuple[Path, int]:
    """An uploaded video PyAV can open, with at least one frame; returns it and its frame count (only the frames
    animated are ever decoded, so a long video is fine)."""
    path = check_file(label, path, limits, VIDEO_SUFFIXES)
    try:
        info = video_info(path)
    except VideoError as e:
        raise ValueError(f"{label}: not a video that can be read ({e})") from None
    if info.frames < 1:
        raise ValueError(f"{label}: the video has no frames")
    if info.width * info.height > limits.max_image_pixels:
        raise ValueError(f"{label}: {info.width}x{info.height} pixels, more than this server's limit of "
                         f"{limits.max_image_pixels / 1e6:g} megapixels")
    return path, info.frames


def unpack_zip(label: str, path: str | Path | None, dest: Path, limits: Limits) -> Path:
    """The OpenPose JSON files, or else the pose images, of an uploaded zip, written into `dest` as 00000.json,
    00001.json, ... (or .png, ...) in the natural order of their names; folders inside the archive are flattened,
    other files ignored. Refused before unpacking: more files than the frame limit, or more bytes unpacked than
    the upload limit."""
    path = check_file(label, path, limits, (".zip",))
    try:
        with zipfile.ZipFile(path) as z:
            members = [m for m in z.infolist() if not m.is_dir()]
            by_kind = {kind: [m for m in members if Path(m.filename).suffix.lower() in suffixes]
                       for kind, suffixes in (("json", (".json",)), ("image", IMAGE_SUFFIXES))}
            chosen = by_kind["json"] or by_kind["image"]
            if not chosen:
                raise ValueError(f"{label}: the zip holds no .json files and no images "
                                 f"({', '.join(IMAGE_SUFFIXES)})")
            if len(chosen) > limits.max_frames:
                raise ValueError(f"{label}: {len(chosen)} pose files, more than this server's limit of "
                                 f"{limits.max_frames} frames")
            unpacked = sum(m.file_size for m in chosen)
            if unpacked > limits.max_bytes:
                raise ValueError(f"{label}: {unpacked / 2**20:.1f} MB unpacked, more than this server's limit of "
                                 f"{limits.max_bytes / 2**20:g} MB")
            chosen.sort(key=lambda m: natural_key(Path(m.filename).name))
            dest.mkdir(parents=True, exist_ok=True)
            for i, m in enumerate(chosen):
                target = dest / f"{i:05d}{Path(m.filename).suffix.lower()}"
                target.write_bytes(z.read(m))  # zipfile reads no more than the header's size, checked above
                if by_kind["image"] is chosen:
                    check_image(f"{label} ({Path(m.filename).name})", target, limits)
    except zipfile.BadZipFile as e:
        raise ValueError(f"{label}: not a zip file ({e})") from None
    return dest
