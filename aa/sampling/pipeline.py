"""animate(): one reference image and a pose sequence in, the frames of a video out (paper 3, figure 2).

Data flow: reference image -> VAE posterior mean latent and CLIP image embedding -> ReferenceNet once -> reference
keys/values projected once (`UNet.reference_kv`); then a DDIM loop over windows of frames, the conditional and
unconditional guidance branches batched in one UNet call; then the VAE decodes a few frames at a time. What does not
change over the steps (Pose Guider features, window indices and weights, timesteps) is put on the device once
(aa/sampling/plan.py), so the loop never waits for the host. Memory is bounded by the window size: only the latents
(4 x h x w per frame), the pose images and, up to a budget, the Pose Guider's features exist for the whole video.
The networks run in the dtype of their weights (fp16/bf16 weights: no autocast); fp32 weights on CUDA run under
autocast at `Settings.dtype`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from aa.models.attention import KV
from aa.models.bundle import Models, module_dtype
from aa.models.clip import preprocess
from aa.models.unet import UNet
from aa.models.vae import AutoencoderKL
from aa.sampling import ddim, solvers
from aa.sampling.plan import PoseFeatures, WindowPlan
from aa.sampling.windows import check_window


@dataclass(frozen=True)
class Settings:
    """Sampling settings. The defaults are ours; `moore_settings()` reproduces the released inference exactly."""

    steps: int = 25
    scheduler: str = "ddim"  # the sampler: 'ddim', 'dpm++2m' or 'unipc' (aa/sampling/solvers.py)
    guidance: float = 3.5  # classifier-free guidance scale; 1 skips the unconditional branch
    eta: float = 0.0  # DDIM stochasticity (0 = deterministic)
    prediction: str = "v"  # what the UNet predicts: 'v' (released weights) or 'eps'
    beta_schedule: str = "scaled_linear"  # what the released weights were trained with (Moore infers with 'linear')
    zero_snr: bool = True  # rescale the schedule to zero terminal SNR (Lin et al. 2024)
    spacing: str = "trailing"  # DDIM timestep spacing: 'trailing', 'leading' or 'linspace'
    steps_offset: int = 1  # added to 'leading' timesteps (diffusers' steps_offset)
    window: int = 24  # frames per temporal window
    overlap: int = 4  # frames shared by consecutive windows
    blend: str = "triangular"  # how overlapping window predictions are averaged: 'triangular' or 'uniform'
    wrap: bool = False  # windows that wrap from the last frame to frame 0 (the released schedule)
    shift_windows: bool = False  # move the window seams at every step (never with wrap)
    reference: bool = True  # use the ReferenceNet (False: image-encoder cross-attention only, an ablation)
    clip_mode: str = "squash"  # CLIP preprocessing: 'squash' to 224x224, 'crop' (short side + centre crop) or
    # 'pil-squash' (PIL's antialiased resize, the released inference)
    decode_chunk: int = 8  # frames per VAE decode call (on CUDA, fewer when free memory is short)
    dtype: torch.dtype = torch.float16  # autocast precision for fp32 weights on CUDA (others run in their own dtype)
    offload: bool = False  # move the ReferenceNet and CLIP encoder to the CPU once the reference is encoded
    split_guidance: bool = False  # run the two guidance branches one after the other: half the step's activations


def moore_settings() -> Settings:
    """Moore-AnimateAnyone's released inference (configs/inference/inference_v2.yaml, pipeline_pose2vid_long):
    linear betas, v-prediction, zero SNR, trailing, uniform averaging over wrap-around windows of 24 with
    overlap 4, fixed across steps, guidance 3.5, CLIP input squashed to 224x224 by PIL."""
    return Settings(beta_schedule="linear", blend="uniform", wrap=True, shift_windows=False, clip_mode="pil-squash")


SAMPLING_PRESETS = {"default": Settings, "moore": moore_settings}


# ---------------------------------------------------------------------------------------------------- inputs
def image_tensor(image: Image.Image | np.ndarray, width: int, height: int) -> Tensor:
    """An RGB image (PIL, or uint8 h w 3) resized to width x height -> (1, 3, height, width) in [-1, 1]."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 image (h, w, 3), got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode!r}: convert it first (image.convert('RGB'))")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)[None]
    return x / 127.5 - 1.0


def check_poses(poses: Sequence[np.ndarray] | np.ndarray, width: int, height: int) -> int:
    """Validate the pose frames before any heavy work; returns their count."""
    for i in (0, len(poses) - 1):
        p = np.asarray(poses[i])
        if p.dtype != np.uint8 or p.shape != (height, width, 3):
            raise ValueError(f"pose frame {i}: expected uint8 ({height}, {width}, 3) to match the output size, "
                             f"got {p.dtype} {p.shape}")
    return len(poses)


# ---------------------------------------------------------------------------------------------------- steps
@torch.inference_mode()
def encode_reference(models: Models, image: Image.Image | np.ndarray, width: int, height: int,
                     clip_mode: str = "squash", reference: bool = True) -> tuple[Tensor, list[KV] | None]:
    """CLIP context (1, 1, c) and the cached reference keys/values of every transformer block (None without the
    ReferenceNet)."""
    device = next(models.unet.parameters()).device
    latent = models.vae.encode(image_tensor(image, width, height).to(device, module_dtype(models.vae)))
    clip_in = preprocess(image, mode=clip_mode, size=models.image_encoder.cfg.image_size)
    context = models.image_encoder.context(clip_in.to(device, module_dtype(models.image_encoder)))  # (1, 1, c)
    dtype = module_dtype(models.unet)
    if not reference:
        return context.to(dtype), None
    features = models.reference_net(latent.to(module_dtype(models.reference_net)), context)
    return context.to(dtype), models.unet.reference_kv([x.to(dtype) for x in features])


def guided_prediction(unet: UNet, x: Tensor, t: int | Tensor, context: Tensor, ref_kv: list[KV] | None, pose: Tensor,
                      guidance: float, adds_to_latent: bool, split: bool = False) -> Tensor:
    """The UNet's prediction for one window x (f, c, h, w), with classifier-free guidance:
    uncond + g (cond - uncond), where the unconditional branch has a zero CLIP embedding and no reference.
    Both branches run in one batch of 2f, or with `split` one after the other (each frame's result is the same: the
    frames of a batch never mix); guidance 1 runs the conditional branch alone."""
    f = x.shape[0]
    if adds_to_latent:  # paper's Pose Guider: added to the noisy latent
        x, pose = x + pose, None
    if guidance == 1.0:
        return unet(x, t, context, ref_kv=ref_kv, pose_features=pose, num_frames=f)
    if split:
        cond = unet(x, t, context, ref_kv=ref_kv, pose_features=pose, num_frames=f)
        uncond = unet(x, t, torch.zeros_like(context), ref_kv=None, pose_features=pose, num_frames=f)
    else:
        both = unet(torch.cat([x, x]), t, torch.cat([context, torch.zeros_like(context)]), ref_kv=ref_kv,
                    pose_features=None if pose is None else torch.cat([pose, pose]), num_frames=f)
        cond, uncond = both.chunk(2)
    return uncond + guidance * (cond - uncond)


@torch.inference_mode()
def denoise(models: Models, latents: Tensor, poses: Sequence[np.ndarray] | np.ndarray, context: Tensor,
            ref_kv: list[KV] | None, settings: Settings, generator: torch.Generator | None = None,
            progress: bool = True, on_window: Callable[[int, int], None] | None = None) -> Tensor:
    """DDIM (or `settings.scheduler`'s multistep solver) over the whole video, window by window; returns the clean
    latents (F, c, h, w). `on_window(done, total)` is called before the first window (done 0) and after each window
    of each step (for progress and its rate; an exception it raises stops the loop).

    Each step blends the windows' predictions into one per frame, then updates every latent once; a multistep
    solver's history is therefore the blended x0 of each frame (where windows overlap, their weighted mean), the
    same whichever windows predicted it, so the windows may move between steps (`shift_windows`)."""
    s = settings
    ab = ddim.alphas_cumprod(s.beta_schedule, s.zero_snr)
    steps = ddim.timesteps(s.steps, len(ab), s.spacing, s.steps_offset)
    n, device, dtype = latents.shape[0], latents.device, module_dtype(models.unet)
    plan = WindowPlan(n, len(steps), s.window, s.overlap, s.wrap, s.shift_windows, s.blend, device)
    pose_features = PoseFeatures(models.pose_guider, poses, device, chunk=s.window)
    if s.scheduler != "ddim":  # a multistep solver steps to the next timestep it evaluates (solvers.chained)
        steps = solvers.chained(steps)
    history: solvers.History | None = None
    t_device = torch.tensor([t for t, _ in steps], device=device)  # one copy; each step indexes it on the device
    total_windows, done = sum(map(len, plan.steps)), 0
    bar = tqdm(total=total_windows, desc="denoising", unit="window", disable=not progress)
    if on_window is not None:
        on_window(0, total_windows)
    for k, (t, t_prev) in enumerate(steps):
        total = torch.zeros_like(latents, dtype=torch.float32)
        weight = torch.zeros(n, 1, 1, 1, device=device)
        for frames, idx, w in plan[k]:  # w: (f, 1, 1, 1) blend weights
            pose = pose_features(frames, idx)
            pred = guided_prediction(models.unet, latents.index_select(0, idx).to(dtype), t_device[k], context,
                                     ref_kv, pose.to(dtype), s.guidance, models.pose_guider.adds_to_latent,
                                     s.split_guidance)
            total.index_add_(0, idx, pred.float() * w)
            weight.index_add_(0, idx, w)
            bar.update()
            done += 1
            if on_window is not None:
                on_window(done, total_windows)
        pred = total / weight
        if s.scheduler == "ddim":
            latents = ddim.ddim_step(latents, pred.to(latents.dtype), ddim.alpha_bar(ab, t),
                                     ddim.alpha_bar(ab, t_prev), s.prediction, s.eta, generator)
        else:
            latents, history = solvers.solver_step(s.scheduler, latents, pred.to(latents.dtype), ddim.alpha_bar(ab, t),
                                                   ddim.alpha_bar(ab, t_prev), s.prediction, history)
    bar.close()
    return latents


@torch.inference_mode()
def decode(vae: AutoencoderKL, latents: Tensor, chunk: int = 8) -> Iterator[np.ndarray]:
    """Decode a few frames at a time -> uint8 (f, H, W, 3) chunks. On CUDA the decode runs outside fp16 autocast
    (the SD VAE overflows in fp16 at high resolution)."""
    for i in range(0, latents.shape[0], chunk):
        z = latents[i:i + chunk]
        with torch.autocast(z.device.type, enabled=False) if z.device.type == "cuda" else nullcontext():
            img = vae.decode(z.to(module_dtype(vae))).float()
        img = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        yield img.permute(0, 2, 3, 1).cpu().numpy()


def initial_latents(num_frames: int, height: int, width: int, channels: int = 4, downscale: int = 8,
                    seed: int = 0) -> Tensor:
    """z_T ~ N(0, I) of shape (f, c, h/8, w/8), drawn on the CPU from `seed` so every device gets the same noise."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(num_frames, channels, height // downscale, width // downscale, generator=g)


def animate_iter(models: Models, reference: Image.Image | np.ndarray, poses: Sequence[np.ndarray] | np.ndarray,
                 settings: Settings = Settings(), *, width: int | None = None, height: int | None = None,
                 seed: int = 0, latents: Tensor | None = None, progress: bool = True,
                 on_window: Callable[[int, int], None] | None = None) -> Iterator[np.ndarray]:
    """Like `animate`, but yields the decoded frames a chunk at a time (for writing long videos). The inputs are
    checked here, before any work starts; `on_window` goes to `denoise` (step progress)."""
    if len(poses) == 0:
        raise ValueError("the pose sequence is empty")
    if settings.steps < 1:
        raise ValueError(f"need at least one step, got {settings.steps}")
    if settings.scheduler not in solvers.SCHEDULERS:
        raise ValueError(f"unknown scheduler {settings.scheduler!r}: expected one of {solvers.SCHEDULERS}")
    if settings.scheduler != "ddim" and settings.eta != 0:
        raise ValueError(f"eta {settings.eta} needs the ddim scheduler: {settings.scheduler} is deterministic")
    check_window(settings.window, settings.overlap)
    if not np.isfinite(settings.guidance):
        raise ValueError(f"the guidance scale must be a finite number, got {settings.guidance}")
    if height is None or width is None:
        height, width = np.asarray(poses[0]).shape[:2]
    down, multiple = models.vae.downscale, models.size_multiple
    if width <= 0 or height <= 0 or width % multiple or height % multiple:
        raise ValueError(f"width and height must be positive multiples of {multiple} for this model, got "
                         f"{width}x{height}")
    n = check_poses(poses, width, height)
    if not isinstance(reference, np.ndarray) and reference.mode != "RGB":
        raise ValueError(f"expected an RGB reference image, got mode {reference.mode!r}: convert it first")
    if latents is None:
        latents = initial_latents(n, height, width, models.vae.cfg.latent_channels, down, seed)
    expected = (n, models.vae.cfg.latent_channels, height // down, width // down)
    if tuple(latents.shape) != expected:
        raise ValueError(f"initial latents must be (f, c, h, w) = {expected}, got {tuple(latents.shape)}")
    return _animate(models, reference, poses, settings, width, height, seed, latents, progress, on_window)


def _animate(models: Models, reference: Image.Image | np.ndarray, poses: Sequence[np.ndarray] | np.ndarray,
             settings: Settings, width: int, height: int, seed: int, latents: Tensor,
             progress: bool, on_window: Callable[[int, int], None] | None = None) -> Iterator[np.ndarray]:
    device = next(models.unet.parameters()).device
    # autocast only for fp32 weights on CUDA: fp16/bf16 weights run as they are, without re-casting every norm
    autocast = device.type == "cuda" and module_dtype(models.unet) == torch.float32 != settings.dtype
    encoders = [models.reference_net, models.image_encoder]
    if settings.offload:  # brought back for this video if an earlier one moved them off
        for m in encoders:
            m.to(device)
    with torch.autocast("cuda", dtype=settings.dtype) if autocast else nullcontext():
        context, ref_kv = encode_reference(models, reference, width, height, settings.clip_mode,
                                           settings.reference)
        if settings.offload:  # ~2.2 GB of SD weights in fp16 that the steps never read
            for m in encoders:
                m.to("cpu")
            if device.type == "cuda":
                torch.cuda.empty_cache()
        generator = torch.Generator(device).manual_seed(seed + 1) if settings.eta > 0 else None
        latents = denoise(models, latents.to(device), poses, context, ref_kv, settings, generator, progress,
                          on_window)
    yield from decode(models.vae, latents, decode_chunk(models.vae, latents, settings.decode_chunk))


def decode_chunk(vae: AutoencoderKL, latents: Tensor, chunk: int, free: int | None = None) -> int:
    """Frames per decode call: `chunk`, or fewer when the decoder's activations would not fit in 80% of `free` bytes
    (by default, on CUDA, the device's free memory; elsewhere no limit). Their peak is about six full-resolution
    maps of the first width per frame: 0.56 GiB at 512x768 in fp16 (tests/test_fast_path.py checks it on meta)."""
    if free is None:
        if latents.device.type != "cuda":
            return chunk
        free, _ = torch.cuda.mem_get_info(latents.device)
    h, w = (s * vae.downscale for s in latents.shape[-2:])
    per_frame = 6 * vae.cfg.decoder_channels[0] * h * w * module_dtype(vae).itemsize
    return max(1, min(chunk, int(0.8 * free) // per_frame))


def animate(models: Models, reference: Image.Image | np.ndarray, poses: Sequence[np.ndarray] | np.ndarray,
            settings: Settings = Settings(), **kwargs) -> np.ndarray:
    """Animate `reference` (RGB) with `poses` (uint8 (h, w, 3) pose images, one per output frame, at the output
    size) -> uint8 frames (f, h, w, 3). Keyword arguments: width, height, seed, latents (explicit z_T of shape
    (f, 4, h/8, w/8)), progress."""
    return np.concatenate(list(animate_iter(models, reference, poses, settings, **kwargs)))


def with_overrides(settings: Settings, **changes) -> Settings:
    """A copy of `settings` with the non-None `changes` applied (for command-line flags)."""
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})
