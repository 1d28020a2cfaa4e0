"""The inference fast path: work moved out of the step loop, exact shortcuts, low precision, compiling."""
import numpy as np
import pytest
import torch

from aa.eval.memory import Emulate, MemoryTracker
from aa.models import attention, config
from aa.models.attention import TransformerBlock
from aa.models.bundle import Models
from aa.models.config import MotionConfig, UNetConfig
from aa.models.reference import ReferenceNet
from aa.models.unet import UNet
from aa.models.vae import AutoencoderKL
from aa.sampling import pipeline
from aa.sampling import plan as step
from aa.sampling.pipeline import Settings, animate, denoise, initial_latents
from tests.helpers import tiny_animation_models

W = H = 32
FAST = Settings(steps=2, window=8, overlap=2)


@pytest.fixture(scope="module")
def models():
    return tiny_animation_models()


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8), rng.integers(0, 256, (14, H, W, 3), dtype=np.uint8)


def test_single_token_cross_attention_equals_full_attention():
    """With one CLIP token, attn2 = to_out(to_v(context)) for every query: the shortcut taken without gradients
    equals the full norm2 -> q, k, v -> softmax attention path taken with them."""
    torch.manual_seed(0)
    block = TransformerBlock(32, 4, 16)
    x, ctx = torch.randn(3, 10, 32), torch.randn(3, 1, 16)
    full, _ = block(x, ctx)  # gradients enabled: the full path
    with torch.no_grad():
        short, _ = block(x, ctx)
        torch.testing.assert_close(short, full, rtol=1e-5, atol=1e-5)
        two, _ = block(x, torch.cat([ctx, ctx], 1))  # two identical tokens: full path, same answer
        torch.testing.assert_close(two, full, rtol=1e-5, atol=1e-5)


def test_sliced_feed_forward_equals_the_whole(monkeypatch):
    """Without gradients the feed-forward runs its rows in slices past FF_CHUNK_ELEMENTS: same output."""
    torch.manual_seed(0)
    ff = attention.FeedForward(16)
    x = torch.randn(7, 5, 16)
    with torch.no_grad():
        whole = ff(x)
        monkeypatch.setattr(attention, "FF_CHUNK_ELEMENTS", 2 * 5 * 64)  # two rows per slice
        torch.testing.assert_close(ff(x), whole, rtol=1e-6, atol=1e-6)


class HostCopies(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts ops that read a CPU tensor while the models run on the meta device (host -> device copies)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        flat = torch.utils._pytree.tree_flatten((args, kwargs or {}))[0]
        out = func(*args, **(kwargs or {}))
        outs = torch.utils._pytree.tree_flatten(out)[0]
        if any(isinstance(t, torch.Tensor) and t.is_meta for t in outs) and \
                any(isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.numel() > 1 for t in flat):
            self.count += 1
        return out


def test_host_to_device_copies_do_not_grow_with_steps(inputs):
    """On a device (here `meta`, where a host read fails loudly), the Pose Guider input, window indices, blend
    weights and timesteps are copied before the loop: a 2-step run makes as many host copies as a 1-step run, and
    no value is read back to the host (no .item() on meta)."""
    _, poses = inputs
    with torch.device("meta"):
        m = Models.build(config.tiny())
    ctx = torch.zeros(1, 1, 16, device="meta")
    kv = m.unet.reference_kv(m.reference_net(torch.zeros(1, 4, 4, 4, device="meta"), ctx))
    counts = []
    for steps in (1, 2):
        with HostCopies() as mode:
            denoise(m, torch.zeros(14, 4, 4, 4, device="meta"), poses, ctx, kv, Settings(steps=steps, window=8,
                    overlap=2), progress=False)
        counts.append(mode.count)
    assert counts[0] == counts[1], f"host copies grow with the steps: {counts}"


def test_pose_guider_runs_once_per_video_within_the_budget(models, inputs, monkeypatch):
    """The Pose Guider runs once per chunk of frames for the whole video, not per window and step; past the memory
    budget it runs per window (bounded memory), and both give the same video."""
    ref, poses = inputs
    calls = []
    hook = models.pose_guider.register_forward_hook(lambda m, a, out: calls.append(a[0].shape[0]))
    try:
        z = initial_latents(14, H, W, seed=1)
        cached = animate(models, ref, poses, FAST, latents=z, progress=False)
        assert calls == [8, 6]  # 14 frames in chunks of the window; 2 steps x 2 windows reuse them
        calls.clear()
        monkeypatch.setattr(step, "POSE_BUDGET_BYTES", 0)
        per_window = animate(models, ref, poses, FAST, latents=z, progress=False)
        assert calls == [8, 8, 8, 8]
    finally:
        hook.remove()
    assert np.abs(cached.astype(int) - per_window.astype(int)).max() <= 1


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def test_bf16_weights_run_natively_close_to_fp32(models, inputs):
    """bf16 weights run in bf16 without autocast (the UNet sees bf16 inputs) and the video stays close to fp32."""
    ref, poses = inputs
    low = Models.build(config.tiny())
    for name, module in models.modules().items():
        getattr(low, name).load_state_dict(module.state_dict())
    low.to(dtype=torch.bfloat16)
    seen = []
    hook = low.unet.register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    try:
        z = initial_latents(8, H, W, seed=2)
        fp32 = animate(models, ref, poses[:8], FAST, latents=z, progress=False)
        bf16 = animate(low, ref, poses[:8], FAST, latents=z, progress=False)
    finally:
        hook.remove()
    assert set(seen) == {torch.bfloat16}
    assert psnr(bf16, fp32) > 25, psnr(bf16, fp32)


def test_channels_last_unet_keeps_its_layout_and_output(models):
    """A channels-last UNet (CUDA low precision) gives the NCHW UNet's output, and its transformer and temporal
    layers hand on channels-last tensors (no NCHW copies after each)."""
    f = 4
    x, ctx = torch.randn(f, 4, 8, 8), torch.randn(1, 1, 16)
    with torch.no_grad():
        ref = models.unet(x, 500, ctx, num_frames=f)
        unet = Models.build(config.tiny()).unet
        unet.load_state_dict(models.unet.state_dict())
        unet.to(memory_format=torch.channels_last)
        layouts = []
        hooks = [m.register_forward_hook(lambda m, a, out: layouts.append(
            (out[0] if isinstance(out, tuple) else out).is_contiguous(memory_format=torch.channels_last)))
            for m in [*unet.transformers(), unet.down_blocks[0].motion_modules[0]]]
        out = unet(x.to(memory_format=torch.channels_last), 500, ctx, num_frames=f)
        for h in hooks:
            h.remove()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert layouts and all(layouts), layouts


def test_unet_step_compiles_without_graph_breaks():
    """torch.compile sees the guided UNet step (both branches, reference K/V, pose features, a tensor timestep)
    as one graph: no graph breaks, so static-shape compiling and CUDA graphs apply. (A one-level UNet with one
    temporal block has every kind of layer and halves the tracing time.)"""
    cfg = UNetConfig(block_out_channels=(16,), attention_levels=(True,), layers_per_block=1, num_heads=2,
                     context_dim=8, norm_groups=4, motion=MotionConfig(num_heads=2, num_blocks=1, max_len=8))
    torch.manual_seed(0)
    unet, reference_net = UNet(cfg), ReferenceNet(cfg)
    f, ctx = 2, torch.randn(1, 1, 8)
    with torch.no_grad():
        kv = unet.reference_kv(reference_net(torch.randn(1, 4, 4, 4), ctx))
        explained = torch._dynamo.explain(unet)(
            torch.randn(2 * f, 4, 4, 4), torch.tensor(500), torch.cat([ctx, ctx * 0]), ref_kv=kv,
            pose_features=torch.randn(2 * f, 16, 4, 4), num_frames=f)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_offload_moves_the_encoders_off_for_the_steps_and_back_before_encoding(models, inputs, monkeypatch):
    """Settings.offload: the ReferenceNet and image encoder are brought to the UNet's device, run, and are sent to the
    CPU before the first denoising step (the steps never call them); the video is the same bytes as without it."""
    ref, poses = inputs
    events = []
    for name in ("reference_net", "image_encoder"):
        module = getattr(models, name)
        module.register_forward_hook(lambda *_, n=name: events.append(("run", n)))
        monkeypatch.setattr(module, "to", lambda device, n=name: events.append(("to", n, str(device))))
    real_denoise = pipeline.denoise
    monkeypatch.setattr(pipeline, "denoise", lambda *a, **k: (events.append(("denoise",)), real_denoise(*a, **k))[1])
    settings = Settings(steps=2, window=8, overlap=2, offload=True)
    out = animate(models, ref, poses[:8], settings, width=W, height=H, progress=False)
    # on this CPU-only machine the UNet's device is "cpu" too, so the moves are told apart by where they happen
    moves = lambda part: {e[1:] for e in part if e[0] == "to"}
    both = {("reference_net", "cpu"), ("image_encoder", "cpu")}
    first_run = min(i for i, e in enumerate(events) if e[0] == "run")
    last_run = max(i for i, e in enumerate(events) if e[0] == "run")
    steps = events.index(("denoise",))
    assert moves(events[:first_run]) == both  # brought to the UNet's device before encoding
    assert last_run < steps and moves(events[last_run:steps]) == both  # sent off after encoding, before the steps
    assert not any(e[0] == "run" for e in events[steps:])
    monkeypatch.undo()
    plain = animate(models, ref, poses[:8], Settings(steps=2, window=8, overlap=2), width=W, height=H, progress=False)
    np.testing.assert_array_equal(out, plain)


def test_decode_chunk_fits_the_free_memory_it_is_given():
    """The free-memory rule for decoding (pipeline.decode_chunk), against the decoder's activations tracked on meta for
    the SD VAE in fp16 at 512x768: the chunk it picks for a given free memory decodes within 80% of it, the per-frame
    figure it assumes is within 2% of the tracked one, and without a free-memory figure off CUDA it keeps the chunk."""
    with torch.device("meta"):
        vae = AutoencoderKL(config.sd15().vae)
    vae.to(torch.float16)
    z = torch.zeros(8, 4, 96, 64, device="meta", dtype=torch.float16)
    assert pipeline.decode_chunk(vae, z, 8) == 8
    chosen = []
    for free in (2**30, 3 * 2**30, 6 * 2**30):
        n = pipeline.decode_chunk(vae, z, 8, free=free)
        with MemoryTracker(device="meta") as mem, Emulate("cuda"), torch.inference_mode():
            vae.decode(z[:n])
        assert mem.peak <= 0.8 * free, (free, n, mem.peak)
        per_frame = 6 * 128 * 512 * 768 * 2
        assert abs(mem.peak / n - per_frame) <= 0.02 * per_frame
        chosen.append(n)
    assert chosen == [1, 4, 8]
    assert pipeline.decode_chunk(vae, z, 8, free=1) == 1  # never below one frame


def test_split_guidance_gives_the_same_video(models, inputs):
    """Settings.split_guidance runs the two guidance branches one after the other instead of as one batch of 2f:
    the frames of a batch never mix, so the video matches the batched one (to float rounding)."""
    ref, poses = inputs
    video = lambda **changes: animate(models, ref, poses[:10], Settings(steps=2, window=8, overlap=2, **changes),
                                      width=W, height=H, progress=False)
    joint, split = video(guidance=3.5), video(guidance=3.5, split_guidance=True)
    assert np.abs(joint.astype(int) - split.astype(int)).max() <= 1
    assert not np.array_equal(joint, video(guidance=1.0))  # guidance matters here, so the match means something
