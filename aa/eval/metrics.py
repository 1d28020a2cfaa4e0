"""Frame-quality and temporal metrics of a generated video against its ground truth.

Every function takes two videos of the same shape (f, h, w, c) (or one frame (h, w, c)), as numpy arrays or
torch tensors: uint8 in [0, 255], or floating point already in [0, 1]. All arithmetic is float64 on values in
[0, 1], so uint8 inputs never wrap around. A video's score is the mean of its per-frame scores.

    psnr            10 log10(1 / MSE) per frame, peak 1 (= 255 on uint8): +inf for an identical frame
    ssim            Wang et al. 2004, gaussian window 11 / sigma 1.5, K1 0.01, K2 0.03, valid positions only
    l1              mean |generated - truth|
    temporal_error  mean |(g[t+1] - g[t]) - (r[t+1] - r[t])|: how far the generated motion is from the true one
    flicker         mean |g[t+1] - g[t]| - mean |r[t+1] - r[t]|: change per frame beyond (+) or short of (-) the truth

Region metrics score the character only: `region_psnr` and `region_ssim` crop every frame to a box around the
character (x0, y0, x1, y1; end-exclusive pixels, one per frame; aa/synthetic writes them), grown by a margin, and
score the crops with the whole-frame definitions above.

The paper's tables quote DisCo's "PSNR*", which is not this PSNR: DisCo's code (tool/metrics/ssim_l1_lpips_psnr.py)
squares differences of uint8 arrays, which wrap modulo 256 (Wangt-CN/DisCo#86); our numbers are not comparable.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Video = np.ndarray | Tensor

SSIM_WINDOW = 11  # 2 * int(3.5 * sigma + 0.5) + 1: scipy's gaussian_filter radius at skimage's truncate 3.5
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def to_unit(video: Video) -> Tensor:
    """A video (f, h, w, c) or frame (h, w, c) -> float64 tensor (f, h, w, c) in [0, 1] (uint8 is divided by 255)."""
    x = video.detach().cpu() if isinstance(video, Tensor) else torch.from_numpy(np.array(video))  # a copy: any strides
    if x.ndim == 3:
        x = x[None]
    assert x.ndim == 4, f"expected a video (f, h, w, c) or a frame (h, w, c), got {tuple(x.shape)}"
    if x.dtype == torch.uint8:
        return x.double() / 255.0
    if not x.is_floating_point():
        raise TypeError(f"expected uint8 or floating-point values in [0, 1], got {x.dtype}")
    return x.double()


def _pair(generated: Video, truth: Video) -> tuple[Tensor, Tensor]:
    """Both videos via `to_unit`, checked to have the same shape."""
    g, r = to_unit(generated), to_unit(truth)
    if g.shape != r.shape:
        raise ValueError(f"videos differ in shape: generated {tuple(g.shape)}, truth {tuple(r.shape)}")
    return g, r


def psnr_frames(generated: Video, truth: Video) -> Tensor:
    """Per-frame PSNR in dB with peak 1 on [0, 1] values, MSE over every pixel and channel -> (f,); +inf where a
    frame is identical."""
    g, r = _pair(generated, truth)
    mse = (g - r).square().mean(dim=(1, 2, 3))
    return -10.0 * torch.log10(mse)  # log10(0) = -inf, so an identical frame is +inf


def psnr(generated: Video, truth: Video) -> float:
    """Mean of the per-frame PSNRs (dB); +inf if any frame is identical (see `psnr_frames`)."""
    return psnr_frames(generated, truth).mean().item()


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """Normalised 1-D gaussian taps exp(-x^2 / 2 sigma^2), x = -(size // 2) .. size // 2 (float64)."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    w = torch.exp(-x.square() / (2 * sigma ** 2))
    return w / w.sum()


def _local_mean(x: Tensor, taps: Tensor) -> Tensor:
    """Gaussian-weighted mean over every fully covered window position: (n, c, h, w) -> (n, c, h-k+1, w-k+1)."""
    c, k = x.shape[1], taps.numel()
    x = F.conv2d(x, taps.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)  # separable: rows, then columns
    return F.conv2d(x, taps.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim_frames(generated: Video, truth: Video, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """Per-frame SSIM (Wang et al. 2004, eq. 13, with population statistics under a gaussian window) -> (f,).

    The SSIM map is computed at the positions where the window lies entirely inside the frame ('valid'; no
    padding), averaged over those positions, then over channels. This equals skimage's
    `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
    channel_axis=-1)`, which filters with reflect padding and then crops (window - 1) / 2 pixels off every border."""
    g, r = _pair(generated, truth)
    h, w = g.shape[1:3]
    if min(h, w) < window:
        raise ValueError(f"SSIM needs frames of at least {window}x{window} pixels, got {w}x{h}")
    taps = gaussian_window(window, sigma)
    x, y = g.permute(0, 3, 1, 2), r.permute(0, 3, 1, 2)  # (f, c, h, w)
    mx, my = _local_mean(x, taps), _local_mean(y, taps)
    vx = _local_mean(x * x, taps) - mx * mx
    vy = _local_mean(y * y, taps) - my * my
    vxy = _local_mean(x * y, taps) - mx * my
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2  # (K L)^2 with dynamic range L = 1
    ssim_map = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)  # positions, then channels (skimage's order)


def ssim(generated: Video, truth: Video) -> float:
    """Mean of the per-frame SSIMs (see `ssim_frames`)."""
    return ssim_frames(generated, truth).mean().item()


def l1(generated: Video, truth: Video) -> float:
    """Mean absolute error over every frame, pixel and channel, on [0, 1] values."""
    g, r = _pair(generated, truth)
    return (g - r).abs().mean().item()


def temporal_error(generated: Video, truth: Video) -> float:
    """Mean |(g[t+1] - g[t]) - (r[t+1] - r[t])| on [0, 1] values: the L1 error of the frame-to-frame differences.

    0 when the generated video changes exactly as the truth does (even if offset from it); a frozen video scores the
    truth's mean motion. NaN for a single frame (no motion to compare)."""
    g, r = _pair(generated, truth)
    if g.shape[0] < 2:
        return math.nan
    return (g.diff(dim=0) - r.diff(dim=0)).abs().mean().item()


def flicker(generated: Video, truth: Video) -> float:
    """Mean |g[t+1] - g[t]| minus mean |r[t+1] - r[t]|: positive when the generated video changes more from frame to
    frame than the truth (flicker), negative when it changes less (frozen); NaN for a single frame."""
    g, r = _pair(generated, truth)
    if g.shape[0] < 2:
        return math.nan
    return (g.diff(dim=0).abs().mean() - r.diff(dim=0).abs().mean()).item()


Box = tuple[int, int, int, int]  # x0, y0, x1, y1: pixels x0 <= x < x1, y0 <= y < y1


def grow_box(box: Box, margin: int, width: int, height: int, min_size: int = SSIM_WINDOW) -> Box:
    """`box` grown by `margin` pixels on every side, clipped to the frame, and widened about its centre (still
    inside the frame) to at least `min_size` pixels each way so SSIM has a window to run."""
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"box {box} is empty or outside the {width}x{height} frame")
    if min(width, height) < min_size:
        raise ValueError(f"a {width}x{height} frame is smaller than the minimum region {min_size}x{min_size}")
    x0, y0, x1, y1 = max(x0 - margin, 0), max(y0 - margin, 0), min(x1 + margin, width), min(y1 + margin, height)

    def widen(a: int, b: int, size: int) -> tuple[int, int]:
        if b - a >= min_size:
            return a, b
        a = min(max(a - (min_size - (b - a)) // 2, 0), size - min_size)
        return a, a + min_size

    (x0, x1), (y0, y1) = widen(x0, x1, width), widen(y0, y1, height)
    return x0, y0, x1, y1


def _regions(generated: Video, truth: Video, boxes: np.ndarray | list, margin: int) -> list[tuple[Tensor, Tensor]]:
    """Each frame pair cropped to its grown box: [(g (1, h', w', c), r (1, h', w', c)), ...]."""
    g, r = _pair(generated, truth)
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    if len(boxes) != g.shape[0]:
        raise ValueError(f"{len(boxes)} boxes for {g.shape[0]} frames")
    h, w = g.shape[1:3]
    crops = []
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = grow_box(tuple(box), margin, w, h)
        crops.append((g[i:i + 1, y0:y1, x0:x1], r[i:i + 1, y0:y1, x0:x1]))
    return crops


def region_psnr(generated: Video, truth: Video, boxes: np.ndarray | list, margin: int = 0) -> float:
    """Mean over frames of the PSNR inside each frame's box (grown by `margin`; see `grow_box`)."""
    return torch.cat([psnr_frames(g, r) for g, r in _regions(generated, truth, boxes, margin)]).mean().item()


def region_ssim(generated: Video, truth: Video, boxes: np.ndarray | list, margin: int = 0) -> float:
    """Mean over frames of the SSIM of each frame cropped to its box (grown by `margin`; see `grow_box`)."""
    return torch.cat([ssim_frames(g, r) for g, r in _regions(generated, truth, boxes, margin)]).mean().item()


METRICS = {"psnr": psnr, "ssim": ssim, "l1": l1, "temporal": temporal_error, "flicker": flicker}


def all_metrics(generated: Video, truth: Video) -> dict[str, float]:
    """Every metric of `METRICS` for one video pair."""
    g, r = _pair(generated, truth)  # convert once
    return {name: fn(g, r) for name, fn in METRICS.items()}
