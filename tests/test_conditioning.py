"""What each piece of the conditioning means (paper 3, and the released code), checked on tiny models through `animate`.

The denoising UNet is wrapped in the test (its `forward` replaced on the instance) to record what it receives and,
where the algebra is the claim, to return known predictions instead of its own. The final latents are read where the
VAE decodes them. With zero terminal SNR, one trailing DDIM step goes from alpha_bar 0 to alpha_bar 1, where a
v-prediction's x_0 is -v: the decoded latents are then minus the blended, guided prediction.
"""
from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest
import torch

from aa.models import config
from aa.models.bundle import Models
from aa.models.clip import preprocess
from aa.models.resnet import timestep_embedding
from aa.models.unet import UNet
from aa.sampling.pipeline import Settings, animate, encode_reference, image_tensor, moore_settings

W = H = 16  # latents 2 x 2: everything runs in milliseconds
SIGNATURE = inspect.signature(UNet.forward)
# predictions that keep frame identities readable from the latents (see `index_latents`)
TRACKING = dict(prediction="eps", zero_snr=False, guidance=1.0)


def build(cfg: config.ModelConfig) -> Models:
    """Random tiny models whose Pose Guider and temporal layers are not zero (as trained ones aren't)."""
    torch.manual_seed(0)
    m = Models.build(cfg)
    for p in m.pose_guider.conv_out.parameters():
        p.data.normal_(0, 0.1)
    for module in m.unet.modules():
        if hasattr(module, "proj_out") and isinstance(module.proj_out, torch.nn.Linear):
            module.proj_out.weight.data.normal_(0, 0.05)
    return m.to("cpu")


@pytest.fixture(scope="module")
def models() -> Models:
    return build(config.tiny())


@pytest.fixture(scope="module")
def ref() -> np.ndarray:
    """A tall random reference (24 x 16): squash, crop and PIL squash give different CLIP inputs."""
    return np.random.default_rng(0).integers(0, 256, (24, 16, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def poses() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (30, H, W, 3), dtype=np.uint8)


@contextmanager
def unet_calls(unet: UNet, stub: Callable[[dict], torch.Tensor] | None = None) -> Iterator[list[dict]]:
    """Record every call of `unet` as its bound arguments; return `stub(call)` instead of the UNet's output if given."""
    calls: list[dict] = []
    original = unet.forward

    def forward(*args, **kwargs):
        bound = SIGNATURE.bind(unet, *args, **kwargs)
        bound.apply_defaults()
        call = {k: v for k, v in bound.arguments.items() if k != "self"}
        calls.append(call)
        return original(*args, **kwargs) if stub is None else stub(call)

    unet.forward = forward
    try:
        yield calls
    finally:
        del unet.forward


@contextmanager
def decoded(models: Models) -> Iterator[list[torch.Tensor]]:
    """Collect the latents handed to the VAE decoder."""
    got: list[torch.Tensor] = []
    original = models.vae.decode

    def decode(z, *args, **kwargs):
        got.append(z.detach().float().clone())
        return original(z, *args, **kwargs)

    models.vae.decode = decode
    try:
        yield got
    finally:
        del models.vae.decode


def videos(call: dict) -> list[dict]:
    """Split one UNet call into its videos: frames' latents, context row, pose features, whether it has a reference."""
    f = call["num_frames"]
    b = call["sample"].shape[0] // f
    r = 0 if call["ref_kv"] is None else call["ref_kv"][0][0].shape[0]
    pose = call["pose_features"]
    return [dict(sample=call["sample"][j * f:(j + 1) * f], context=call["context"][j], has_ref=j < r,
                 pose=None if pose is None else pose[j * f:(j + 1) * f]) for j in range(b)]


def index_latents(n: int) -> torch.Tensor:
    """z_T with channel 0 = frame + 1 and channel 1 = 1: a stub that predicts eps = x keeps the channel ratio, so the
    frames in any window at any step are readable from what the UNet receives."""
    z = torch.ones(n, 4, H // 8, W // 8)
    z[:, 0] = torch.arange(1, n + 1, dtype=torch.float32)[:, None, None]
    return z


def frames_of(sample: torch.Tensor) -> list[int]:
    return ((sample[:, 0, 0, 0] / sample[:, 1, 0, 0]).round().long() - 1).tolist()


def visited(calls: list[dict]) -> list[list[list[int]]]:
    """The windows (frame lists) of each step, steps told apart by their timestep."""
    steps: dict[int, list[list[int]]] = {}
    for call in calls:
        for v in videos(call):
            steps.setdefault(int(call["timestep"]), []).append(frames_of(v["sample"]))
    return [steps[t] for t in sorted(steps, reverse=True)]


def echo(call: dict) -> torch.Tensor:
    """Predict eps = x: with eps-prediction every step only rescales the latents (frames stay readable)."""
    return call["sample"].clone()


def zero(call: dict) -> torch.Tensor:
    return call["sample"] * 0


def pose_images(poses: np.ndarray, frames: list[int]) -> torch.Tensor:
    """Pose frames as the Pose Guider takes them: (f, 3, h, w) RGB in [0, 1]."""
    return torch.from_numpy(poses[frames]).permute(0, 3, 1, 2).float() / 255


def run(models: Models, ref, poses, settings: Settings, z: torch.Tensor, stub=None, **kw) -> tuple[list, torch.Tensor]:
    """animate() with the UNet recorded (and stubbed); returns the calls and the final latents."""
    with unet_calls(models.unet, stub) as calls, decoded(models) as got:
        animate(models, ref, poses[:len(z)], settings, latents=z, progress=False, **kw)
    return calls, torch.cat(got)


# ---------------------------------------------------------------------------------------------------- guidance
@pytest.mark.parametrize("g, split", [(1.0, False), (2.5, False), (2.5, True)])
def test_guidance_is_uncond_plus_scale_times_difference(models, ref, poses, g, split):
    """With a stub UNet predicting C for videos with a CLIP embedding and U for those without, the prediction
    used is U + g (C - U) (classifier-free guidance, Ho & Salimans 2022, eq. 6), the branches in one batch or one
    after the other (`split_guidance`); at g = 1 only C, and only the conditional branch runs."""
    z = torch.randn(5, 4, H // 8, W // 8, generator=torch.Generator().manual_seed(0))

    def stub(call):
        out = []
        for v in videos(call):
            cond = bool(v["context"].abs().sum() > 0)
            out.append(0.5 * v["sample"] + 1.0 if cond else -0.25 * v["sample"] + 0.3)
        return torch.cat(out)

    calls, final = run(models, ref, poses, Settings(steps=1, guidance=g, window=8, split_guidance=split), z, stub)
    cond, uncond = 0.5 * z + 1.0, -0.25 * z + 0.3
    torch.testing.assert_close(final, -(uncond + g * (cond - uncond)), rtol=1e-5, atol=1e-5)
    if g == 1.0:
        assert all(v["context"].abs().sum() > 0 for c in calls for v in videos(c))


@pytest.mark.parametrize("split", [False, True])
def test_unconditional_branch_has_zero_clip_embedding_and_no_reference(models, ref, poses, split):
    """Every window runs a conditional video (the reference's CLIP embedding, the reference keys/values) and an
    unconditional one of the same frames (zero CLIP embedding, attending to itself only, as released), in one batch or,
    with `split_guidance`, as two consecutive calls."""
    context, kv = encode_reference(models, ref, W, H)
    settings = Settings(steps=2, window=4, overlap=1, split_guidance=split)
    calls, _ = run(models, ref, poses, settings, index_latents(7), zero)
    assert calls
    windows = [videos(a) + videos(b) for a, b in zip(calls[::2], calls[1::2])] if split else map(videos, calls)
    for vs in windows:
        cond = [v for v in vs if v["context"].abs().sum() > 0]
        uncond = [v for v in vs if v["context"].abs().sum() == 0]
        assert len(cond) == len(uncond) >= 1
        for v in cond:
            torch.testing.assert_close(v["context"], context[0])
            assert v["has_ref"], "the conditional branch attends to the reference"
        assert not any(v["has_ref"] for v in uncond), "the unconditional branch has no reference"
        for a, b in zip(cond, uncond):
            torch.testing.assert_close(a["sample"], b["sample"])
            torch.testing.assert_close(a["pose"], b["pose"])
    for call in calls:
        for (k, v), (k0, v0) in zip(call["ref_kv"] or [], kv):
            torch.testing.assert_close(k, k0)
            torch.testing.assert_close(v, v0)
    assert sum(call["ref_kv"] is not None for call in calls) == (len(calls) // 2 if split else len(calls))


@pytest.mark.parametrize("g", [1.0, 3.5])
def test_the_reference_changes_the_video(models, ref, poses, g):
    """Sampling with the ReferenceNet differs from sampling without it (`reference=False`), with and without
    guidance: the reference keys/values reach the denoising UNet."""
    z = torch.randn(3, 4, H // 8, W // 8, generator=torch.Generator().manual_seed(1))
    s = Settings(steps=1, guidance=g, window=8)
    _, with_ref = run(models, ref, poses, s, z)
    _, without = run(models, ref, poses, replace(s, reference=False), z)
    assert (with_ref - without).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------------- reference
def test_reference_features_pair_with_their_blocks_at_timestep_0(models, ref):
    """The cached reference keys/values of transformer block i are block i's attn1 to_k/to_v applied to the
    ReferenceNet's block-i attn1 input (norm1 output), with the ReferenceNet run once at timestep 0 (paper 3.2)."""
    ref_blocks = [t.transformer_blocks[0] for t in models.reference_net.transformers()]
    seen: dict[int, torch.Tensor] = {}
    temb_in: list[torch.Tensor] = []
    hooks = [b.norm1.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out))
             for i, b in enumerate(ref_blocks)]
    hooks.append(models.reference_net.time_embedding.register_forward_pre_hook(lambda m, a: temb_in.append(a[0])))
    try:
        _, kv = encode_reference(models, ref, W, H)
    finally:
        for h in hooks:
            h.remove()
    assert len(temb_in) == 1, "the ReferenceNet runs once"
    torch.testing.assert_close(temb_in[0], timestep_embedding(torch.zeros(1), temb_in[0].shape[-1]))
    blocks = [t.transformer_blocks[0].attn1 for t in models.unet.transformers()]
    assert len(kv) == len(blocks) == len(seen)
    for i, (attn, (k, v)) in enumerate(zip(blocks, kv)):
        with torch.inference_mode():
            k0, v0 = attn.project_kv(seen[i])
        torch.testing.assert_close(k, k0, msg=f"keys of block {i}")
        torch.testing.assert_close(v, v0, msg=f"values of block {i}")


def test_reference_latent_is_the_vae_mean_of_the_reference(models, ref):
    """The ReferenceNet's input is the VAE's (scaled) posterior mean of the reference resized to the output size."""
    got = []
    h = models.reference_net.register_forward_pre_hook(lambda m, a: got.append(a[0]))
    try:
        encode_reference(models, ref, W, H)
    finally:
        h.remove()
    with torch.no_grad():
        torch.testing.assert_close(got[0], models.vae.encode(image_tensor(ref, W, H)))


# ---------------------------------------------------------------------------------------------------- pose
def test_pose_features_reach_their_frames(models, ref, poses):
    """In every window at every step, both branches get the Pose Guider's output for exactly that window's pose
    images (nonzero: the guider here is not zero-initialised)."""
    calls, _ = run(models, ref, poses, Settings(steps=2, window=4, overlap=1, **{**TRACKING, "guidance": 2.0}),
                   index_latents(9), echo)
    for call in calls:
        for v in videos(call):
            frames = frames_of(v["sample"])
            with torch.no_grad():
                expected = models.pose_guider(pose_images(poses, frames))
            assert v["pose"] is not None and v["pose"].abs().max() > 0
            torch.testing.assert_close(v["pose"], expected, rtol=1e-4, atol=1e-5)


def test_poses_change_the_video(models, ref, poses):
    """Other poses with the same noise and reference give other latents (real UNet, one step)."""
    z = torch.randn(3, 4, H // 8, W // 8, generator=torch.Generator().manual_seed(2))
    s = Settings(steps=1, window=8)
    _, a = run(models, ref, poses[:3], s, z)
    _, b = run(models, ref, poses[3:6], s, z)
    assert (a - b).abs().max() > 1e-3


def test_released_pose_features_are_added_right_after_conv_in(models):
    """UNet(x, pose_features=p) with p constant over space equals the UNet without pose features whose conv_in
    bias is raised by p: the released Pose Guider's output joins right after conv_in."""
    unet = copy.deepcopy(models.unet)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 2, 2, generator=g)
    ctx = torch.randn(1, 1, unet.cfg.context_dim, generator=g)
    p = torch.randn(unet.conv_in.out_channels, generator=g)
    with torch.no_grad():
        with_pose = unet(x, 500, ctx, pose_features=p[None, :, None, None].expand(2, -1, 2, 2), num_frames=2)
        plain = unet(x, 500, ctx, num_frames=2)
        unet.conv_in.bias += p
        shifted_bias = unet(x, 500, ctx, num_frames=2)
    torch.testing.assert_close(with_pose, shifted_bias, rtol=1e-4, atol=1e-5)
    assert (with_pose - plain).abs().max() > 1e-3


def test_paper_pose_guider_adds_to_the_noisy_latent(poses, ref):
    """The paper's variant (4 output channels, adds_to='latent'): the UNet receives z_t + PoseGuider(pose) as its
    sample and no pose features."""
    cfg = config.tiny()
    m = build(replace(cfg, pose_guider=replace(cfg.pose_guider, out_channels=4, adds_to="latent")))
    z = torch.randn(3, 4, H // 8, W // 8, generator=torch.Generator().manual_seed(4))
    calls, _ = run(m, ref, poses, Settings(steps=1, window=8), z, zero)
    with torch.no_grad():
        guided = z + m.pose_guider(pose_images(poses, [0, 1, 2]))
    for call in calls:
        assert call["pose_features"] is None
        for v in videos(call):
            torch.testing.assert_close(v["sample"], guided, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------- windows
def expected_blend(windows: list[list[int]], values: list[float], n: int, kind: str) -> torch.Tensor:
    """Per-frame weighted average of per-window constants; triangular weight min(i + 1, L - i) at position i."""
    total, weight = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for frames, value in zip(windows, values):
        L = len(frames)
        for i, frame in enumerate(frames):
            w = min(i + 1, L - i) if kind == "triangular" else 1.0
            total[frame] += w * value
            weight[frame] += w
    return total / weight


@pytest.mark.parametrize("kind", ["triangular", "uniform"])
def test_overlapping_predictions_are_blended_with_the_chosen_weights(models, ref, poses, kind):
    """A stub predicting a different constant per window: each frame's prediction is the triangular (or plain)
    weighted average of the windows it sits in."""
    n = 10
    values: dict[tuple[int, ...], float] = {}

    def stub(call):
        out = []
        for v in videos(call):
            key = tuple(frames_of(v["sample"]))
            values.setdefault(key, float(len(values) * 3 + 1))
            out.append(torch.full_like(v["sample"], values[key]))
        return torch.cat(out)

    calls, final = run(models, ref, poses, Settings(steps=1, guidance=1.0, window=4, overlap=2, blend=kind),
                       index_latents(n), stub)
    assert len(values) >= 3, "the video is covered by several overlapping windows"
    expected = expected_blend([list(k) for k in values], list(values.values()), n, kind)
    torch.testing.assert_close(final, -expected.float()[:, None, None, None].expand_as(final), rtol=1e-5, atol=1e-5)


def test_windows_overlap_as_set_and_stay_fixed(models, ref, poses):
    """20 frames, windows of 8 overlapping by 2, no shifting: every step visits [0..7], [6..13], [12..19]."""
    calls, _ = run(models, ref, poses, Settings(steps=3, window=8, overlap=2, **TRACKING), index_latents(20), echo)
    expected = [list(range(0, 8)), list(range(6, 14)), list(range(12, 20))]
    steps = visited(calls)
    assert len(steps) == 3 and all(sorted(s) == expected for s in steps), steps


def test_shift_windows_moves_the_seams_between_steps(models, ref, poses):
    """With shift_windows the windows differ between steps, yet each step covers every frame with contiguous
    windows of 8 overlapping by at least 2."""
    calls, _ = run(models, ref, poses, Settings(steps=4, window=8, overlap=2, shift_windows=True, **TRACKING),
                   index_latents(20), echo)
    steps = [sorted(s) for s in visited(calls)]
    assert len(steps) == 4 and len({str(s) for s in steps}) > 1, steps
    for s in steps:
        assert sorted({i for w in s for i in w}) == list(range(20))
        for w in s:
            assert w == list(range(w[0], w[0] + 8))
        for a, b in zip(s, s[1:]):
            assert a[-1] - b[0] + 1 >= 2


def test_moore_preset_visits_the_released_wraparound_windows(models, ref, poses):
    """moore_settings() on 26 frames: windows of 24 every 20 frames, the second wrapping to frame 0: [0..23] and
    [20..25, 0..17] at every step, as the release does."""
    s = replace(moore_settings(), steps=2, **TRACKING)
    calls, _ = run(models, ref, poses, s, index_latents(26), echo)
    expected = [list(range(24)), [*range(20, 26), *range(18)]]
    assert visited(calls) == [expected, expected]


# ---------------------------------------------------------------------------------------------------- DDIM, CLIP
def test_eta_adds_seeded_noise(models, ref, poses):
    """DDIM eta > 0 changes the result from eta = 0 (same z_T), reproducibly for a seed, differently across seeds."""
    z = torch.randn(3, 4, H // 8, W // 8, generator=torch.Generator().manual_seed(5))
    stub = lambda c: 0.5 * c["sample"]  # noqa: E731
    s = Settings(steps=3, window=8, guidance=1.0)
    _, det = run(models, ref, poses, s, z, stub)
    _, a = run(models, ref, poses, replace(s, eta=1.0), z, stub, seed=7)
    _, b = run(models, ref, poses, replace(s, eta=1.0), z, stub, seed=7)
    _, c = run(models, ref, poses, replace(s, eta=1.0), z, stub, seed=8)
    assert torch.equal(a, b)
    assert (a - det).abs().max() > 1e-2 and (a - c).abs().max() > 1e-2


@pytest.mark.parametrize("mode", ["squash", "crop", "pil-squash"])
def test_clip_mode_reaches_the_image_encoder(models, ref, poses, mode):
    """The context the UNet gets is the image encoder's embedding of the reference preprocessed with the settings'
    clip_mode; the three modes give different embeddings for a non-square reference."""
    calls, _ = run(models, ref, poses, Settings(steps=1, window=8, clip_mode=mode), torch.zeros(2, 4, 2, 2),
                   zero)
    size = models.image_encoder.cfg.image_size
    with torch.no_grad():
        embeddings = {m: models.image_encoder.context(preprocess(ref, mode=m, size=size))[0] for m in
                      ("squash", "crop", "pil-squash")}
    got = videos(calls[0])[0]["context"]
    torch.testing.assert_close(got, embeddings[mode])
    assert all((got - e).abs().max() > 1e-4 for m, e in embeddings.items() if m != mode)


def released_alphas_cumprod() -> torch.Tensor:
    """Moore's inference schedule written out: linear betas 0.00085..0.012 over 1000 steps, rescaled to zero
    terminal SNR (Lin et al. 2024, algorithm 1), float64."""
    betas = torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64)
    sqrt_ab = torch.cumprod(1 - betas, 0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    ab = sqrt_ab ** 2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return torch.cumprod(alphas, 0)


def test_moore_settings_are_the_released_inference():
    """moore_settings(): DDIM with linear betas, v-prediction, zero terminal SNR, trailing spacing, eta 0, guidance 3.5,
    windows of 24 overlapping by 4 that wrap, uniform averaging, fixed seams, PIL-squashed CLIP input
    (configs/inference/inference_v2.yaml, pipeline_pose2vid_long.py); its 25 steps are t = 999, 959, ..., 39 on
    the schedule written out above."""
    from aa.sampling import ddim
    s = moore_settings()
    assert (s.beta_schedule, s.prediction, s.zero_snr, s.spacing, s.eta, s.guidance) == \
        ("linear", "v", True, "trailing", 0.0, 3.5)
    assert (s.window, s.overlap, s.wrap, s.blend, s.shift_windows, s.clip_mode, s.reference) == \
        (24, 4, True, "uniform", False, "pil-squash", True)
    ts = ddim.timesteps(25, 1000, s.spacing, s.steps_offset)
    assert [t for t, _ in ts] == list(range(999, 0, -40))
    ab = ddim.alphas_cumprod(s.beta_schedule, s.zero_snr)
    torch.testing.assert_close(ab.double(), released_alphas_cumprod(), rtol=1e-9, atol=1e-12)
