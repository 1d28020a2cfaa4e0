"""Video and image-folder IO: the project's one place that talks to PyAV.

Frames are numpy arrays `(f, h, w, 3)` uint8 RGB. Normal output is H.264 (libx264, yuv420p, BT.709 tagged) in .mp4,
playable by browsers and common players. Lossless output (`lossless=True`) is H.264 High 4:4:4 Predictive in RGB
(libx264rgb, qp 0): it decodes pixel-exactly, is half the size of FFV1 on our synthetic clips, keeps the frame count
in the .mp4 index, but few players show it; it is meant for datasets, not for viewing.

A path ending in .npz is a raw clip instead: the frames and the frame rate as an uncompressed numpy archive (arrays
`frames` and `fps`). It needs no FFmpeg, so PyAV may be missing where only raw clips are read and written (a GPU
machine without it, say), and it loads faster than decoding, at about ten times the size on disk.
"""
from __future__ import annotations

import bisect
import os
import secrets
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from aa.io.cli import write_failure
from aa.io.image import natural_key, pil_to_rgb

try:
    import av
except ImportError:  # needed for encoded video (.mp4, ...), not for raw .npz clips
    av = None

# x264's output depends on its thread count: fix it so the same frames give the same bytes on every machine.
_X264_THREADS = 4
_BT709 = 1  # AVCOL_SPC / AVCOL_PRI / AVCOL_TRC value for BT.709; AVCOL_RANGE 1 = limited ("tv") range
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
RAW_SUFFIX = ".npz"


class VideoError(ValueError):
    """A video file or frame folder that cannot be opened, decoded or is empty; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds: number of frames, frame rate and frame size in pixels."""

    frames: int
    fps: float
    width: int
    height: int


def _need_av(path: Path) -> None:
    if av is None:
        raise VideoError(f"{path}: encoded video needs PyAV, which is not installed (pip install av); raw "
                         f"{RAW_SUFFIX} clips do not")


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    _need_av(path)
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise VideoError(f"{path}: not a readable video ({e})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    return container


def _packets(path: Path) -> tuple[list[int | None], set[int]]:
    """Presentation timestamps of every frame in display order, and those of keyframes, by demuxing (no decoding)."""
    with _open(path) as container:
        try:
            packets = [(p.pts, p.is_keyframe) for p in container.demux(container.streams.video[0])
                       if p.size and not p.is_discard]
        except av.FFmpegError as e:
            raise VideoError(f"{path}: cannot demux ({e})") from None
    if not packets:
        raise VideoError(f"{path}: video stream has no frames")
    pts = [p for p, _ in packets]
    return (sorted(pts) if None not in pts else pts), {p for p, key in packets if key}


def _fps(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _read_raw(path: Path) -> tuple[np.ndarray, float]:
    """A raw clip's frames `(f, h, w, 3)` uint8 and frame rate, checked."""
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            frames, fps = archive["frames"], float(archive["fps"])
    except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise VideoError(f"{path}: not a readable raw clip: an uncompressed .npz of 'frames' and 'fps' ({e})") from None
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or not len(frames):
        raise VideoError(f"{path}: frames must be (f, h, w, 3) uint8 with f > 0, got {frames.shape} {frames.dtype}")
    return frames, fps


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame count, fps and size; the count comes from the container's index, or from demuxing when it has none."""
    path = Path(path)
    if path.suffix == RAW_SUFFIX:
        frames, fps = _read_raw(path)
        return VideoInfo(len(frames), fps, frames.shape[2], frames.shape[1])
    with _open(path) as container:
        stream = container.streams.video[0]
        frames, fps = stream.frames, _fps(stream)
        width, height = stream.codec_context.width, stream.codec_context.height
    return VideoInfo(frames or len(_packets(path)[0]), fps, width, height)


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    # to_ndarray converts with the frame's own colour matrix tag (BT.601 when untagged)
    return frame.to_ndarray(format="rgb24")


def _decode_all(path: Path, n: int) -> list[np.ndarray]:
    """Every frame from the start; `n` (the demuxed count) catches truncated files that decode short."""
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            frames = [_rgb(f) for f in container.decode(stream)]
        except av.FFmpegError as e:
            raise VideoError(f"{path}: decoding failed ({e})") from None
    if len(frames) != n:
        raise VideoError(f"{path}: decoded {len(frames)} of {n} frames (truncated or corrupt file?)")
    return frames


def _decode_some(path: Path, pts: list[int], wanted: list[int]) -> dict[int, np.ndarray] | None:
    """Seek to the keyframe before the first wanted frame and decode forward until the last one.

    Returns None when seeking is not possible or lands past the first wanted frame (an imprecise index)."""
    index_of = {p: i for i, p in enumerate(pts)}
    todo, got = set(wanted), {}
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            container.seek(pts[wanted[0]], stream=stream, backward=True, any_frame=False)
        except av.FFmpegError:
            return None
        try:
            for frame in container.decode(stream):
                i = index_of.get(frame.pts)
                if i is None or (not got and i > wanted[0]):
                    return None
                if i in todo:
                    got[i] = _rgb(frame)
                    todo.discard(i)
                    if not todo:
                        break
        except av.FFmpegError as e:
            raise VideoError(f"{path}: decoding failed ({e})") from None
    return got if not todo else None


def _checked_indices(path: Path, indices: Sequence[int], n: int) -> list[int]:
    indices = [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise VideoError(f"{path}: frame indices {bad[:5]} out of range for a video of {n} frames")
    return indices


def read_video(path: str | os.PathLike, indices: Sequence[int] | None = None) -> np.ndarray:
    """Decode a video to `(n, h, w, 3)` uint8 RGB: all frames, or only `indices` (any order, repeats allowed).

    With indices, only the stretch from the keyframe before the first wanted frame to the last one is decoded."""
    path = Path(path)
    if path.suffix == RAW_SUFFIX:
        frames = _read_raw(path)[0]
        return frames if indices is None else frames[_checked_indices(path, indices, len(frames))]
    pts, keyframes = _packets(path)
    n = len(pts)
    if indices is None:
        return np.stack(_decode_all(path, n))
    indices = _checked_indices(path, indices, n)
    if not indices:
        info = video_info(path)
        return np.zeros((0, info.height, info.width, 3), np.uint8)
    got: dict[int, np.ndarray] = {}
    for run in ([] if None in pts else _runs(sorted(set(indices)), pts, keyframes)):
        frames = _decode_some(path, pts, run)
        if frames is None:
            got = {}
            break
        got.update(frames)
    if not got:  # no usable timestamps or an imprecise seek: decode from the start
        frames = _decode_all(path, n)
        got = {i: frames[i] for i in set(indices)}
    return np.stack([got[i] for i in indices])


def iter_video(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Decode frame by frame as `(h, w, 3)` uint8 RGB, so memory does not grow with the video's length."""
    path = Path(path)
    if path.suffix == RAW_SUFFIX:  # one array on disk: read whole
        yield from _read_raw(path)[0]
        return
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                yield _rgb(frame)
        except av.FFmpegError as e:
            raise VideoError(f"{path}: decoding failed ({e})") from None


def _runs(wanted: list[int], pts: list[int], keyframes: set[int]) -> list[list[int]]:
    """Split sorted frame indices where a keyframe lies between two of them: a new seek beats decoding through."""
    starts = [k for k, p in enumerate(pts) if p in keyframes]  # frame indices of keyframes, sorted
    runs = [[wanted[0]]]
    for prev, i in zip(wanted[:-1], wanted[1:]):
        if bisect.bisect_right(starts, i) > bisect.bisect_right(starts, prev):  # a keyframe in (prev, i]
            runs.append([i])
        else:
            runs[-1].append(i)
    return runs


def _check_frame(path: Path, i: int, frame: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{path}: frame {i} must be (h, w, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    if shape is not None and frame.shape != shape:
        raise ValueError(f"{path}: frame {i} has shape {frame.shape}, the first frame had {shape}")
    return np.ascontiguousarray(frame)


def _add_stream(container: av.container.OutputContainer, path: Path, shape: tuple[int, ...], fps: float,
                lossless: bool, crf: int) -> av.video.stream.VideoStream:
    h, w = shape[:2]
    if not lossless and (h % 2 or w % 2):
        raise ValueError(f"{path}: H.264 yuv420p needs even width and height, got {w}x{h} "
                         f"(crop or pad the frames, or write with lossless=True)")
    stream = container.add_stream("libx264rgb" if lossless else "libx264",
                                  rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height = w, h
    stream.codec_context.thread_count = _X264_THREADS
    if lossless:
        stream.pix_fmt = "rgb24"
        stream.options = {"qp": "0", "preset": "medium"}
    else:
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        cc = stream.codec_context
        cc.colorspace = cc.color_primaries = cc.color_trc = _BT709
        cc.color_range = 1
    return stream


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, *, lossless: bool = False,
                crf: int = 18) -> None:
    """Encode `(h, w, 3)` uint8 RGB frames as H.264, streaming (memory does not grow with length) and atomically.

    The file appears at `path` only when complete (written beside it, then renamed); on any error nothing is left.
    `lossless=True` round-trips pixel-exactly and allows odd sizes; otherwise width and height must be even. A
    .npz path writes a raw clip (always exact; the frames are held in memory)."""
    path = Path(path)
    if not (fps > 0 and np.isfinite(fps)):
        raise ValueError(f"{path}: fps must be a positive number, got {fps}")
    if not path.parent.is_dir():
        raise VideoError(f"{path}: folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    if path.suffix == RAW_SUFFIX:
        _write_raw(path, tmp, frames, fps)
        return
    _need_av(path)
    try:
        it = iter(frames)
        first = next(it, None)
        if first is None:
            raise ValueError(f"{path}: no frames to write")
        first = _check_frame(path, 0, first, None)
        try:
            container = av.open(str(tmp), "w", options={"movflags": "+faststart"} if path.suffix in (
                ".mp4", ".mov", ".m4v") else {})
        except av.FFmpegError as e:
            raise VideoError(f"{path}: cannot create a video file of this type ({e})") from None
        with container:
            stream = _add_stream(container, path, first.shape, fps, lossless, crf)
            i, frame = 0, first
            while frame is not None:
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
                if not lossless:
                    vf = vf.reformat(format="yuv420p", dst_colorspace="ITU709")
                vf.pts = i
                container.mux(stream.encode(vf))
                i, frame = i + 1, next(it, None)
                if frame is not None:
                    frame = _check_frame(path, i, frame, first.shape)
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    except av.FFmpegError as e:
        if isinstance(e, OSError) and e.errno is not None:  # disk full, file too large, no permission
            raise VideoError(write_failure(path, e)) from None
        raise VideoError(f"{path}: encoding failed ({e})") from None
    finally:
        tmp.unlink(missing_ok=True)


def _write_raw(path: Path, tmp: Path, frames: Iterable[np.ndarray], fps: float) -> None:
    checked: list[np.ndarray] = []
    for i, frame in enumerate(frames):
        checked.append(_check_frame(path, i, frame, checked[0].shape if checked else None))
    if not checked:
        raise ValueError(f"{path}: no frames to write")
    try:
        with tmp.open("wb") as f:
            np.savez(f, frames=np.stack(checked), fps=np.float64(fps))
        os.replace(tmp, path)
    except OSError as e:
        raise VideoError(write_failure(path, e)) from None
    finally:
        tmp.unlink(missing_ok=True)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """One image file as `(h, w, 3)` uint8 RGB: grey, palette and CMYK converted, transparency over white."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            return np.asarray(pil_to_rgb(image))
    except (OSError, ValueError) as e:
        raise VideoError(f"{path}: cannot read as an 8-bit RGB image ({e})") from None


def read_frames_folder(path: str | os.PathLike) -> np.ndarray:
    """Read a folder of images (natural name order: 2 before 10) as `(n, h, w, 3)` uint8 RGB.

    Files with other suffixes are ignored. Grey, palette and CMYK images are converted to RGB; images with
    transparency are composited over white. All images must have the same size."""
    path = Path(path)
    if not path.is_dir():
        raise VideoError(f"{path}: not a folder")
    files = sorted((f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda f: natural_key(f.name))
    if not files:
        raise VideoError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    frames = []
    for f in files:
        frame = read_image(f)
        if frames and frame.shape != frames[0].shape:
            raise VideoError(f"{f}: size {frame.shape[1]}x{frame.shape[0]} differs from "
                             f"{files[0].name} ({frames[0].shape[1]}x{frames[0].shape[0]})")
        frames.append(frame)
    return np.stack(frames)
