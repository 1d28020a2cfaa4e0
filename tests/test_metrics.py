"""aa.eval.metrics: analytic cases, the conventions, and SSIM/PSNR parity with scikit-image through a golden file."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from aa.eval import metrics

GOLDEN = Path(__file__).parent / "data" / "golden_metrics.safetensors"


def moving_video(frames: int = 5, h: int = 16, w: int = 20, seed: int = 0) -> np.ndarray:
    """A uint8 video (f, h, w, 3) of a textured square sliding right over a noisy background."""
    rng = np.random.default_rng(seed)
    video = np.repeat(rng.integers(40, 200, (1, h, w, 3), dtype=np.uint8), frames, axis=0)
    patch = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    for t in range(frames):
        video[t, 5:11, 2 + 2 * t:8 + 2 * t] = patch
    return video


def test_identical_videos_score_perfectly() -> None:
    """A video against itself: PSNR +inf, SSIM 1, L1 0, temporal error 0, flicker 0."""
    v = moving_video()
    assert metrics.psnr(v, v) == math.inf
    assert metrics.ssim(v, v) == pytest.approx(1.0, abs=1e-12)
    assert metrics.l1(v, v) == 0.0
    assert metrics.temporal_error(v, v) == 0.0
    assert metrics.flicker(v, v) == 0.0


def test_uint8_and_float_inputs_agree() -> None:
    """uint8 frames are read as value / 255, so they score exactly like the same frames given as floats in [0, 1],
    as numpy arrays or torch tensors; a single frame (h, w, c) is a one-frame video."""
    a, b = moving_video(seed=0), moving_video(seed=1)
    for name, fn in metrics.METRICS.items():
        want = fn(a, b)
        got = fn(torch.from_numpy(a).float() / 255, b.astype(np.float64) / 255)
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9), name
    assert metrics.psnr(a[2], b[2]) == pytest.approx(metrics.psnr_frames(a, b)[2].item())


def test_uint8_differences_do_not_wrap() -> None:
    """A frame 1 level darker than the truth has MSE (1/255)^2, not the (255/255)^2 that uint8 subtraction would
    give where it wraps around (the bug behind DisCo's PSNR*)."""
    truth = np.full((1, 12, 12, 3), 100, np.uint8)
    assert metrics.psnr(truth - 1, truth) == pytest.approx(20 * math.log10(255))


@pytest.mark.parametrize("d", [0.01, 0.1, 0.25])
def test_psnr_of_constant_offset(d: float) -> None:
    """Adding a constant d (no clipping) gives MSE d^2, so PSNR = -10 log10 d^2 in every frame."""
    truth = np.random.default_rng(0).uniform(0.3, 0.6, (3, 12, 14, 3))
    assert metrics.psnr(truth + d, truth) == pytest.approx(-10 * math.log10(d * d), rel=1e-9)


def test_psnr_averages_frames_not_errors() -> None:
    """The video's PSNR is the mean of per-frame PSNRs: frames with offsets 0.1 and 0.01 give (20 + 40) / 2 = 30 dB,
    not the PSNR of the pooled MSE (about 23 dB)."""
    truth = np.full((2, 12, 12, 3), 0.5)
    generated = truth + np.array([0.1, 0.01])[:, None, None, None]
    assert metrics.psnr(generated, truth) == pytest.approx(30.0)


@pytest.mark.parametrize("a,c", [(0.2, 0.1), (0.5, -0.3), (0.05, 0.9)])
def test_ssim_brightness_shift_is_the_luminance_term(a: float, c: float) -> None:
    """A constant image a against a + c: variances and covariance are 0, so the contrast-structure term is
    C2 / C2 = 1 and SSIM is the luminance term (2 a (a + c) + C1) / (a^2 + (a + c)^2 + C1) with C1 = 0.01^2."""
    x = np.full((1, 16, 16, 3), a)
    c1 = 0.01 ** 2
    want = (2 * a * (a + c) + c1) / (a * a + (a + c) ** 2 + c1)
    assert metrics.ssim(x + c, x) == pytest.approx(want, rel=1e-9)


def test_ssim_shift_keeps_structure_on_textured_images() -> None:
    """On a textured image the same shift keeps contrast and structure (variance and covariance are unchanged), so
    SSIM is at most 1 and falls as the shift grows."""
    x = np.random.default_rng(0).uniform(0.2, 0.6, (1, 16, 16, 3))
    scores = [metrics.ssim(x + c, x) for c in (0.0, 0.05, 0.2, 0.4)]
    assert scores[0] == pytest.approx(1.0, abs=1e-12)
    assert all(s > t for s, t in itertools.pairwise(scores))


def test_ssim_is_symmetric() -> None:
    """SSIM(a, b) == SSIM(b, a): the formula is symmetric in its two images."""
    a, b = moving_video(seed=0), moving_video(seed=3)
    assert metrics.ssim(a, b) == pytest.approx(metrics.ssim(b, a), abs=1e-15)


def test_ssim_of_one_window_is_the_weighted_formula() -> None:
    """An 11x11 frame has exactly one valid window position: its SSIM is eq. 13 with means, variances and covariance
    weighted by the 2-D gaussian exp(-(i^2 + j^2) / 2 sigma^2) over the whole frame, per channel, then averaged."""
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (11, 11, 3)), rng.uniform(0, 1, (11, 11, 3))
    i = np.arange(11) - 5
    w = np.exp(-(i[:, None] ** 2 + i[None, :] ** 2) / (2 * 1.5 ** 2))
    w = (w / w.sum())[:, :, None]
    mx, my = (w * x).sum((0, 1)), (w * y).sum((0, 1))
    vx, vy = (w * x * x).sum((0, 1)) - mx ** 2, (w * y * y).sum((0, 1)) - my ** 2
    vxy = (w * x * y).sum((0, 1)) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    want = ((2 * mx * my + c1) * (2 * vxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))).mean()
    assert metrics.ssim(x, y) == pytest.approx(want, rel=1e-12)


def test_ssim_averages_valid_positions_only() -> None:
    """No padding: a 21x21 frame has 11x11 = 121 valid positions, and a pixel changed at the corner lies in only one
    of them (the window over the top-left 11x11 crop), so SSIM = (120 + SSIM of that crop) / 121. With zero or
    reflect padding counted in, the corner would sit in 36 windows."""
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.2, 0.8, (1, 21, 21, 3))
    generated = truth.copy()
    generated[0, 0, 0] = 1.0
    crop = metrics.ssim(generated[:, :11, :11], truth[:, :11, :11])
    assert crop < 1.0
    assert metrics.ssim(generated, truth) == pytest.approx((120 + crop) / 121, rel=1e-12)


def test_ssim_rejects_frames_smaller_than_the_window() -> None:
    """Frames narrower than the 11-pixel window have no valid position: an error, not a silent NaN."""
    x = np.zeros((1, 10, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="11x11"):
        metrics.ssim(x, x)


def test_ssim_matches_skimage() -> None:
    """Per-frame SSIM and PSNR equal scikit-image's (`structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=-1)`, `peak_signal_noise_ratio(data_range=1)`) on four
    20x28 frame pairs from tools/make_golden_metrics.py, within 1e-4 (float64 on both sides: ~1e-15 in practice)."""
    d = load_file(str(GOLDEN))
    ssim = metrics.ssim_frames(d["generated"], d["truth"]).numpy()
    psnr = metrics.psnr_frames(d["generated"], d["truth"]).numpy()
    np.testing.assert_allclose(ssim, d["ssim"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(psnr, d["psnr"], rtol=0, atol=1e-4)
    assert len(set(np.round(d["ssim"], 2))) == len(d["ssim"]), "the fixture should cover distinct SSIM levels"


def test_l1_is_mean_absolute_error() -> None:
    """L1 of a video against itself plus +-d in alternating frames is d."""
    truth = np.full((4, 12, 12, 3), 0.5)
    generated = truth + 0.1 * np.array([1, -1, 1, -1])[:, None, None, None]
    assert metrics.l1(generated, truth) == pytest.approx(0.1)


def test_temporal_error_of_a_frozen_copy_is_the_true_motion() -> None:
    """Frame 0 repeated (no motion) against a moving video scores the truth's mean |r[t+1] - r[t]|, and its flicker
    is minus that: the frozen video changes that much less than the truth."""
    truth = moving_video()
    frozen = np.repeat(truth[:1], len(truth), axis=0)
    motion = np.abs(np.diff(truth.astype(np.float64) / 255, axis=0)).mean()
    assert motion > 0
    assert metrics.temporal_error(frozen, truth) == pytest.approx(motion, rel=1e-12)
    assert metrics.flicker(frozen, truth) == pytest.approx(-motion, rel=1e-12)


def test_temporal_error_ignores_a_constant_offset() -> None:
    """A video offset by a constant from the truth moves exactly like it: temporal error 0, while L1 is the offset."""
    truth = moving_video().astype(np.float64) / 255 * 0.8
    assert metrics.temporal_error(truth + 0.1, truth) == pytest.approx(0.0, abs=1e-12)
    assert metrics.l1(truth + 0.1, truth) == pytest.approx(0.1)


def test_flicker_of_independent_noise_is_positive() -> None:
    """Fresh noise added to every frame makes the video change more than the truth between frames: flicker > 0."""
    truth = moving_video().astype(np.float64) / 255 * 0.8 + 0.1
    noisy = truth + np.random.default_rng(0).normal(0, 0.05, truth.shape)
    assert metrics.flicker(noisy, truth) > 0.02


def test_single_frame_has_no_temporal_score() -> None:
    """One frame has no motion to compare: temporal error and flicker are NaN, the frame metrics are defined."""
    v = moving_video(frames=1)
    scores = metrics.all_metrics(v, v)
    assert math.isnan(scores["temporal"]) and math.isnan(scores["flicker"])
    assert scores["ssim"] == pytest.approx(1.0)


def test_mismatched_shapes_raise() -> None:
    """Videos of different shapes are an error naming both shapes."""
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.l1(moving_video(frames=3), moving_video(frames=4))


def _numpy_ssim(x: np.ndarray, y: np.ndarray, window: int = 11, sigma: float = 1.5) -> float:
    """SSIM written out independently: loop over every window position fully inside the (h, w, c) float images,
    gaussian-weighted population statistics per channel (Wang et al. 2004, eq. 13), mean over positions and channels."""
    r = np.arange(window) - window // 2
    taps = np.exp(-r ** 2 / (2 * sigma ** 2))
    weights = np.outer(taps, taps) / np.outer(taps, taps).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    h, w, c = x.shape
    values = []
    for ch in range(c):
        for i in range(h - window + 1):
            for j in range(w - window + 1):
                a, b = x[i:i + window, j:j + window, ch], y[i:i + window, j:j + window, ch]
                ma, mb = (weights * a).sum(), (weights * b).sum()
                va, vb = (weights * a * a).sum() - ma ** 2, (weights * b * b).sum() - mb ** 2
                cov = (weights * a * b).sum() - ma * mb
                values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_region_metrics_match_an_independent_computation() -> None:
    """Region PSNR is 10 log10(1 / MSE) over the pixels of each frame's grown box, and region SSIM the SSIM of the
    crop, both checked against direct numpy formulas (MSE by hand, SSIM by a loop over window positions) and
    averaged over frames; pixels outside the boxes don't count."""
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 256, (2, 24, 30, 3), dtype=np.uint8)
    generated = np.clip(truth.astype(np.int64) + rng.integers(-30, 31, truth.shape), 0, 255).astype(np.uint8)
    boxes = [(4, 3, 16, 17), (10, 6, 25, 20)]  # grown by 2: (2, 1, 18, 19), (8, 4, 27, 22)
    grown = [(2, 1, 18, 19), (8, 4, 27, 22)]
    g, r = generated / 255.0, truth / 255.0
    crops = [(g[i, y0:y1, x0:x1], r[i, y0:y1, x0:x1]) for i, (x0, y0, x1, y1) in enumerate(grown)]
    psnr = np.mean([-10 * np.log10(np.mean((a - b) ** 2)) for a, b in crops])
    ssim = np.mean([_numpy_ssim(a, b) for a, b in crops])
    assert metrics.region_psnr(generated, truth, boxes, margin=2) == pytest.approx(psnr, rel=1e-12)
    assert metrics.region_ssim(generated, truth, boxes, margin=2) == pytest.approx(ssim, rel=1e-9)
    outside = generated.copy()
    outside[:, :, 28:] = 0  # right of both grown boxes
    outside[0, 20:] = 255  # below frame 0's grown box
    assert metrics.region_psnr(outside, truth, boxes, margin=2) == metrics.region_psnr(generated, truth, boxes, 2)
    assert metrics.region_ssim(outside, truth, boxes, margin=2) == metrics.region_ssim(generated, truth, boxes, 2)
    assert metrics.psnr(outside, truth) < metrics.psnr(generated, truth)


def test_grow_box_clips_to_the_frame_and_keeps_an_ssim_window() -> None:
    """A box grows by the margin, stops at the frame's edges, and a small one widens about its centre to the SSIM
    window (11 px), shifted inward at an edge; an empty or outside box is refused."""
    assert metrics.grow_box((10, 10, 30, 40), 4, 96, 96) == (6, 6, 34, 44)
    assert metrics.grow_box((0, 2, 30, 96), 4, 32, 96) == (0, 0, 32, 96)
    assert metrics.grow_box((20, 20, 23, 22), 0, 96, 96) == (16, 16, 27, 27)
    assert metrics.grow_box((0, 90, 2, 96), 1, 96, 96) == (0, 85, 11, 96)
    for bad in ((5, 5, 5, 9), (0, 0, 97, 10), (-1, 0, 4, 4)):
        with pytest.raises(ValueError, match="box"):
            metrics.grow_box(bad, 0, 96, 96)
