"""The VAE trainer's pieces (tools/train_vae.py is its command line): frames of a dataset split, reconstruction
scores, a decoder of new widths or widened from the old one (Net2WiderNet), whole-frame latents cached once for
decoder-only runs and crops of them paired with their pixels, and the saved file with its architecture beside it."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from aa.eval.metrics import psnr_frames, ssim_frames
from aa.io.video import read_video
from aa.models.vae import AutoencoderKL
from aa.training.augment import random_colour_transform
from aa.weights.sd import save_native


def load_frames(data: Path | list[Path], split: str, every: int) -> np.ndarray:
    """Every `every`-th frame of every video of a split (of each dataset folder), (n, h, w, 3) uint8."""
    folders = [data] if isinstance(data, Path) else data
    return np.concatenate([read_video(folder / e["video"])[::every] for folder in folders
                           for e in json.loads((folder / f"{split}.json").read_text())])


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(n, h, w, 3) uint8 -> (n, 3, h, w) float in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1


@torch.no_grad()
def reconstruction(vae: AutoencoderKL, frames: np.ndarray, batch: int = 32) -> dict[str, float]:
    """Mean per-frame PSNR and SSIM (aa.eval.metrics) of decode(posterior mean) against the (n, h, w, 3) uint8 frames,
    with the output rounded to uint8 as a saved video would be."""
    out = []
    for x in to_tensor(frames).split(batch):
        y = vae.decoder(vae.post_quant_conv(vae.posterior(x).mean))
        out.append(((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1))
    out = torch.cat(out)
    return {"psnr": psnr_frames(out, frames).mean().item(), "ssim": ssim_frames(out, frames).mean().item()}


def with_new_decoder(vae: AutoencoderKL, widths: tuple[int, ...] | None, layers: int | None) -> AutoencoderKL:
    """A VAE with `vae`'s encoder, quant_conv and post_quant_conv (the same tensors) and a freshly initialised
    decoder of other widths and/or depth: the latent space stays, the decoder is trained from scratch.
    ValueError if the widths don't have one level per encoder level or don't divide into the norm groups."""
    cfg = replace(vae.cfg, decoder_block_out_channels=widths or vae.cfg.decoder_block_out_channels,
                  decoder_layers_per_block=vae.cfg.decoder_layers if layers is None else layers)
    if any(c % cfg.norm_groups for c in cfg.decoder_channels):
        raise ValueError(f"decoder widths {cfg.decoder_channels} must be multiples of norm_groups={cfg.norm_groups}")
    new = AutoencoderKL(cfg)
    for name in ("encoder", "quant_conv", "post_quant_conv"):
        setattr(new, name, getattr(vae, name))
    return new


@torch.no_grad()
def widen_decoder(vae: AutoencoderKL, factor: int, generator: torch.Generator | None = None) -> AutoencoderKL:
    """`vae` with a decoder `factor` times as wide that computes the same function (Net2WiderNet, Chen et al. 2016):
    every hidden channel becomes `factor` adjacent copies (so each stays in its GroupNorm group, whose statistics
    are unchanged), and each weight reading a copied channel is split between the copies at random fractions that
    sum to one, so the copies start equal in value but get different gradients and train apart. The attention's
    query is divided by sqrt(factor): the dot product over twice the copies doubles, the softmax scale only falls by
    sqrt(2). Encoder, quant_conv and post_quant_conv are `vae`'s own tensors: the latent space stays. Training starts
    from the old decoder's quality instead of from scratch."""
    new = with_new_decoder(vae, tuple(factor * c for c in vae.cfg.decoder_channels), None)
    state = {}
    for name, t in vae.decoder.state_dict().items():
        if not name.startswith("conv_out."):  # every output but the image's RGB is a hidden channel
            t = t.repeat_interleave(factor, 0)
        if t.ndim > 1 and not name.startswith("conv_in."):  # every input but the latent is a hidden channel
            share = torch.rand(t.shape[0], t.shape[1], factor, *t.shape[2:], generator=generator)
            t = t.repeat_interleave(factor, 1) * (share / share.sum(2, keepdim=True)).flatten(1, 2)
        if ".to_q." in name:
            t = t / math.sqrt(factor)
        state[name] = t
    new.decoder.load_state_dict(state)
    return new


def recolour(frames: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """Each of the (n, h, w, 3) uint8 frames given its own random colour transform with probability p
    (aa.training.augment), so the VAE learns colours the training characters never wore. p = 0 returns `frames`
    and draws nothing from `rng` (a run without augmentation is the same as before it existed)."""
    if not p:
        return frames
    out = frames.copy()
    for i in np.flatnonzero(rng.uniform(size=len(frames)) < p):
        out[i] = random_colour_transform(rng).apply(frames[i])
    return out


@torch.no_grad()
def encode_moments(vae: AutoencoderKL, frames: np.ndarray, batch: int = 64,
                   progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen encoder's posterior mean and std of every (n, h, w, 3) uint8 frame, each (n, latent, h/f, w/f):
    computed once, so decoder-only training never runs the encoder again."""
    mean, std = [], []
    for x in tqdm(to_tensor(frames).split(batch), desc="encode", leave=False, disable=not progress):
        q = vae.posterior(x)
        mean.append(q.mean)
        std.append(q.std)
    return torch.cat(mean), torch.cat(std)


def latent_crop(frames: np.ndarray, moments: tuple[torch.Tensor, torch.Tensor], idx: np.ndarray, y0: int, x0: int,
                size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same crop of frames `idx` in both spaces: a posterior sample over latent rows y0..y0+size and columns
    x0..x0+size of the cached whole-frame moments (mean, std), and the pixels under it ((b, 3, fs, fs) in [-1, 1],
    f = frame size / latent size). Cropping whole-frame latents gives the decoder what it sees at inference."""
    mean, std = moments
    f = frames.shape[1] // mean.shape[-2]
    rows = torch.from_numpy(np.asarray(idx))
    mean, std = mean[rows, :, y0:y0 + size, x0:x0 + size], std[rows, :, y0:y0 + size, x0:x0 + size]
    pixels = to_tensor(frames[idx, f * y0:f * (y0 + size), f * x0:f * (x0 + size)])
    return pixels, mean + std * torch.randn_like(mean)


def noisy_latents(z: torch.Tensor, scale: float, rng: np.random.Generator) -> torch.Tensor:
    """`z` plus Gaussian noise of standard deviation scale * u, u uniform in [0, 1) and drawn per frame: latents as
    rough as a diffusion model's samples, for a decoder that should smooth such grain rather than draw it."""
    if not scale:
        return z
    u = torch.from_numpy(rng.random(len(z))).to(z)
    return z + scale * u[:, None, None, None] * torch.randn_like(z)


def save(vae: AutoencoderKL, out: Path) -> None:
    """vae.safetensors (native names, fp32) and vae_config.json (its VAEConfig, which tools/pack_vae_decoder.py
    reads when the decoder's architecture changed), both written atomically."""
    save_native(vae, out / "vae.safetensors")
    tmp = out / "vae_config.json.tmp"
    tmp.write_text(json.dumps(asdict(vae.cfg), indent=1))
    tmp.replace(out / "vae_config.json")


def decoder_parameters(vae: AutoencoderKL) -> list[torch.nn.Parameter]:
    """What `--decoder-only` trains: the decoder and post_quant_conv (everything after the latent)."""
    return [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]
