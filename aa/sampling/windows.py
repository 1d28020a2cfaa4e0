"""Long videos as overlapping windows of frames whose predictions are blended (temporal aggregation as in EDGE,
arXiv 2211.10658; paper 4.1).

Our default windows never wrap around: the last window is aligned to the last frame. `wrap=True` reproduces the
released Moore-AnimateAnyone schedule exactly: windows start every `window - overlap` frames from 0 and run
past the end back into frame 0, which blends the last frames with the first.
"""
from __future__ import annotations

import torch
from torch import Tensor

BLENDS = ("uniform", "triangular")


def check_window(window: int, overlap: int, prefix: str = "") -> None:
    """The one rule for window sizes (sample.py's flags, `animate`'s settings, the schedule): a window of at least
    one frame, and an overlap in [0, window). `prefix` ('--' for flags) goes before the names in the message."""
    if window < 1:
        raise ValueError(f"{prefix}window must be at least 1, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"{prefix}overlap must be in [0, {prefix}window): 0 <= overlap < window, got overlap "
                         f"{overlap} for window {window}")


def window_schedule(num_frames: int, window: int = 24, overlap: int = 4, wrap: bool = False,
                    offset: int = 0) -> list[list[int]]:
    """Frame indices of each window; together they cover every frame.

    offset (0 <= offset < window - overlap) shifts the inner window starts, so seams move between steps; the first
    and last windows stay anchored to the ends of the video. Ignored with `wrap`.
    """
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    check_window(window, overlap)
    if num_frames <= window:
        return [list(range(num_frames))]
    stride = window - overlap
    if wrap:
        return [[i % num_frames for i in range(start, start + window)] for start in range(0, num_frames, stride)]
    if not 0 <= offset < stride:
        raise ValueError(f"offset must be in [0, {stride}), got {offset}")
    last = num_frames - window
    starts = sorted({0, *range(offset or stride, last, stride), last})
    return [list(range(s, s + window)) for s in starts]


def step_offset(step: int, window: int, overlap: int) -> int:
    """Per-step shift of the window starts for `shift_windows`: cycles through [0, stride) in a spread-out order
    (bit-reversed step, as AnimateDiff's context schedulers do), so seams land in a different place every step."""
    stride = window - overlap
    reversed_bits = int(f"{step:032b}"[::-1], 2) / 2 ** 32
    return int(reversed_bits * stride)


def blend_weights(length: int, kind: str = "triangular") -> Tensor:
    """Per-frame weights of one window's prediction: 'uniform' (the released code's plain average) or
    'triangular' (highest mid-window, falling to 1 at both ends, as in MimicMotion), so a frame near a seam takes
    most of its prediction from the window in which it sits deepest."""
    if kind == "uniform":
        return torch.ones(length)
    if kind == "triangular":
        i = torch.arange(length, dtype=torch.float32)
        return torch.minimum(i + 1, length - i)
    raise ValueError(f"unknown blend {kind!r}: expected one of {BLENDS}")
