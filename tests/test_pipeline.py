"""animate() on a tiny random-weight model: outputs, reproducibility, windows, guidance, memory (CPU)."""
import numpy as np
import pytest
import torch

from aa.eval.memory import MemoryTracker
from aa.sampling.pipeline import Settings, animate, animate_iter, initial_latents
from aa.sampling.windows import blend_weights, window_schedule
from tests.helpers import tiny_animation_models

W = H = 32
FAST = Settings(steps=2, window=8, overlap=2)


@pytest.fixture(scope="module")
def models():
    return tiny_animation_models()


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    poses = rng.integers(0, 256, (20, H, W, 3), dtype=np.uint8)
    return ref, poses


def test_output_shape_dtype_and_reproducibility(models, inputs):
    """f uint8 RGB frames at the pose size; the same seed gives identical frames, another seed different ones."""
    ref, poses = inputs
    a = animate(models, ref, poses[:6], FAST, seed=3, progress=False)
    b = animate(models, ref, poses[:6], FAST, seed=3, progress=False)
    c = animate(models, ref, poses[:6], FAST, seed=4, progress=False)
    assert a.shape == (6, H, W, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.std() > 0  # not a constant image


def test_windows_without_overlap_equal_separate_videos(models, inputs):
    """With overlap 0, a 16-frame video in windows of 8 equals animating each 8-frame half on its own (same noise):
    nothing leaks between windows except through their overlap."""
    ref, poses = inputs
    s = Settings(steps=2, window=8, overlap=0)
    z = initial_latents(16, H, W, seed=5)
    whole = animate(models, ref, poses[:16], s, latents=z, progress=False)
    first = animate(models, ref, poses[:8], s, latents=z[:8], progress=False)
    second = animate(models, ref, poses[8:16], s, latents=z[8:], progress=False)
    assert np.array_equal(whole, np.concatenate([first, second]))


@pytest.mark.parametrize("frames", [1, 7, 8, 9, 24, 25, 64, 100, 101])
@pytest.mark.parametrize("window, overlap", [(8, 2), (24, 4), (16, 0)])
def test_blended_schedule_covers_every_frame_in_order(frames, window, overlap):
    """Every frame is in some window, windows never wrap, never exceed the video, and neighbours share at least
    `overlap` frames, for every per-step offset."""
    for offset in range(window - overlap):
        wins = window_schedule(frames, window, overlap, offset=offset)
        assert sorted({i for w in wins for i in w}) == list(range(frames))
        for w in wins:
            assert w == list(range(w[0], w[0] + len(w))) and len(w) == min(window, frames)
        for a, b in zip(wins, wins[1:]):
            assert a[-1] - b[0] + 1 >= overlap


def released_uniform_schedule(num_frames, context_size=24, context_overlap=4):
    """The released context scheduler as called by Moore's pose2vid_long (step 0, context_stride 1, closed loop),
    written out apart from aa/sampling/windows.py: starts every (size - overlap) frames from 0 while start < n,
    indices taken modulo n."""
    if num_frames <= context_size:
        return [list(range(num_frames))]
    windows, start = [], 0
    while start < num_frames:
        windows.append([(start + i) % num_frames for i in range(context_size)])
        start += context_size - context_overlap
    return windows


@pytest.mark.parametrize("frames", [25, 64, 100])
def test_wrap_option_reproduces_the_released_windows(frames):
    """wrap=True gives the released lists for 24-frame windows with overlap 4, e.g. 25 frames ->
    [0..23] and [20..24, 0..18]."""
    assert window_schedule(frames, 24, 4, wrap=True) == released_uniform_schedule(frames)
    if frames == 25:
        assert window_schedule(25, 24, 4, wrap=True)[1] == [20, 21, 22, 23, 24, *range(19)]


def test_blend_weights():
    """Triangular weights peak mid-window and are 1 at both ends; uniform weights are all 1."""
    assert blend_weights(6).tolist() == [1, 2, 3, 3, 2, 1]
    assert blend_weights(5).tolist() == [1, 2, 3, 2, 1]
    assert blend_weights(4, "uniform").tolist() == [1, 1, 1, 1]


def test_guidance_one_skips_the_unconditional_branch(models, inputs):
    """Guidance 3.5 runs each window as one batch of 2f frames (cond + uncond); guidance 1 as f frames only.
    The ReferenceNet runs once per video either way."""
    ref, poses = inputs
    batches, ref_calls = [], []
    h1 = models.unet.register_forward_pre_hook(lambda m, a: batches.append(a[0].shape[0]))
    h2 = models.reference_net.register_forward_pre_hook(lambda m, a: ref_calls.append(1))
    try:
        animate(models, ref, poses[:4], Settings(steps=2, window=8, guidance=3.5), progress=False)
        assert batches == [8, 8] and len(ref_calls) == 1
        batches.clear()
        animate(models, ref, poses[:4], Settings(steps=2, window=8, guidance=1.0), progress=False)
        assert batches == [4, 4] and len(ref_calls) == 2
    finally:
        h1.remove()
        h2.remove()


def test_peak_memory_is_bounded_by_the_window(models, inputs):
    """A video 4x the window peaks at about the memory of one window: only latents and pose images scale with the
    video, the UNet's activations and the decode don't (measured as live tensor bytes)."""
    ref, poses = inputs
    long_poses = np.concatenate([poses] * 2)[:32]
    peaks = []
    for n in (8, 32):
        with MemoryTracker() as mem:
            for _ in animate_iter(models, ref, long_poses[:n], Settings(steps=1, window=8, overlap=2),
                                  progress=False):
                pass
        peaks.append(mem.peak)
    with MemoryTracker() as mem:  # for scale: the same 32 frames in a single window
        for _ in animate_iter(models, ref, long_poses, Settings(steps=1, window=32, overlap=2), progress=False):
            pass
    assert peaks[1] < 1.15 * peaks[0], peaks
    assert mem.peak > 1.5 * peaks[1], (mem.peak, peaks)


def test_bad_inputs_fail_before_any_work(models, inputs):
    """Pose frames of the wrong size, an RGBA reference, wrong initial latents, sizes not divisible by 8."""
    ref, poses = inputs
    with pytest.raises(ValueError, match="pose frame"):
        animate(models, ref, poses[:, :16], FAST, width=W, height=H, progress=False)
    with pytest.raises(ValueError, match="RGB"):
        from PIL import Image
        animate(models, Image.new("RGBA", (W, H)), poses[:2], FAST, progress=False)
    with pytest.raises(ValueError, match="initial latents"):
        animate(models, ref, poses[:2], FAST, latents=torch.zeros(3, 4, 4, 4), progress=False)
    with pytest.raises(ValueError, match="multiples"):
        animate(models, ref, np.zeros((2, 30, 30, 3), np.uint8), FAST, progress=False)
    with pytest.raises(ValueError, match="empty"):
        animate(models, ref, np.zeros((0, H, W, 3), np.uint8), FAST, progress=False)
