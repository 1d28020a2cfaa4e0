"""Stable Diffusion 1.x UNet and VAE loaders: SD single files, diffusers folders and files, standalone VAE files.

The format is recognised from the key names, never the file name; tensors are renamed to ours (`rules.py`) without
copies, checked strictly and assigned into a model built on the meta device, so loading a 3.4 GB UNet needs about
3.4 GB. Our one native format is safetensors with our (diffusers) names: `save_native`, then `load_unet`/`load_vae`.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from aa.models.config import UNetConfig, VAEConfig, build, sd15_unet
from aa.models.unet import UNet
from aa.models.vae import AutoencoderKL
from aa.weights.detect import describe, kinds, read_keys
from aa.weights.files import StateDict, WeightsError, read_state_dict, save_state_dict
from aa.weights.rules import UNET_RULES, VAE_RULES, Rules, convert
from aa.weights.strict import build_and_load

# Everything an SD single file holds besides the model being loaded, dropped by name; any other key must match.
DDPM_BUFFERS = (  # the training schedule, recomputed by aa.sampling.ddim
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2")
SINGLE_FILE_DROPS = (
    *DDPM_BUFFERS,
    "cond_stage_model.",  # the CLIP text encoder: Animate Anyone conditions on CLIP image embeddings instead
    "model_ema.",  # EMA copies in non-pruned files (`model_ema.diffusion_modelinput_blocks00weight`, ...)
    "model.diffusion_model.",  # the UNet, when loading the VAE
    "first_stage_model.",  # the VAE, when loading the UNet
)
VAE_FILE_DROPS = ("loss.",)  # LPIPS and discriminator weights in non-pruned standalone VAE checkpoints

# diffusers' weight file names in a `unet/` or `vae/` folder, in order of preference
DIFFUSERS_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Format:
    """How a file names a model's tensors: keys under `prefix` are the model's (prefix stripped, then renamed by
    `rules`, None for our names already); keys outside it are dropped if `drops` names them (a name, or a prefix
    ending in '.'), else kept so strict loading reports them."""

    name: str
    prefix: str = ""
    rules: Rules | None = None
    drops: tuple[str, ...] = ()

    def keeps(self, key: str) -> bool:
        if key.startswith(self.prefix):
            return True
        return not any(key == d or (d.endswith(".") and key.startswith(d)) for d in self.drops)

    def to_ours(self, state: StateDict, cfg: UNetConfig | VAEConfig, source: str) -> StateDict:
        n = len(self.prefix)
        state = {k[n:] if k.startswith(self.prefix) else k: v for k, v in state.items()}
        return state if self.rules is None else convert(state, self.rules, cfg, source)


UNET_DIFFUSERS = Format("a diffusers UNet (diffusers names, as in Moore's denoising_unet.pth and our native files)")
UNET_SINGLE_FILE = Format("an SD single file (LDM names)", "model.diffusion_model.", UNET_RULES, SINGLE_FILE_DROPS)
VAE_DIFFUSERS = Format("a diffusers VAE (diffusers names, as in our native files)")
VAE_DIFFUSERS_LEGACY = Format("a diffusers VAE saved by diffusers < 0.14 (query/key/value/proj_attn)", rules=VAE_RULES)
VAE_SINGLE_FILE = Format("an SD single file (LDM names)", "first_stage_model.", VAE_RULES, SINGLE_FILE_DROPS)
VAE_LDM = Format("a standalone VAE file (LDM names, no prefix)", "", VAE_RULES, VAE_FILE_DROPS)
COMMUNITY = " with to_q/to_k/to_v/to_out.0 VAE attention"  # an old converter's variant, see VAE_RULES


def detect_unet_format(keys: list[str] | set[str], source: str = "the weights") -> Format:
    """The UNet format of a file from its key names, or a WeightsError saying what the file looks like instead."""
    found = kinds(keys)
    if "ldm-unet" in found:
        return UNET_SINGLE_FILE
    if "unet" in found and "controlnet" not in found:
        return UNET_DIFFUSERS
    raise WeightsError(f"{source}: not an SD UNet; it looks like {describe(keys)}")


def detect_vae_format(keys: list[str] | set[str], source: str = "the weights") -> Format:
    """The VAE format of a file from its key names, or a WeightsError saying what the file looks like instead."""
    found = kinds(keys)
    community = any(k.endswith("mid.attn_1.to_q.weight") for k in keys)
    if "ldm-vae" in found:
        return _named(VAE_SINGLE_FILE, community)
    if "vae-ldm" in found:
        return _named(VAE_LDM, community)
    if "vae" in found:
        legacy = any(".attentions.0.query." in k for k in keys)
        return VAE_DIFFUSERS_LEGACY if legacy else VAE_DIFFUSERS
    raise WeightsError(f"{source}: not an SD VAE; it looks like {describe(keys)}")


def _named(fmt: Format, community: bool) -> Format:
    return replace(fmt, name=fmt.name + COMMUNITY) if community else fmt


def resolve(path: str | os.PathLike, subfolder: str, half: bool = False) -> Path:
    """The weights file to read: `path` itself, or diffusers' weights in the folder `path` or `path/subfolder`.

    A folder may hold `diffusion_pytorch_model.{safetensors,bin}` and their `.fp16.` variants; safetensors come
    first, and the full-precision file unless `half` (a half-precision dtype was asked for).
    """
    path = Path(path)
    if not path.is_dir():
        return path  # a file (or nothing: read_state_dict says so)
    if (path / subfolder).is_dir():
        path = path / subfolder
    variants = [n.replace(".", ".fp16.", 1) for n in DIFFUSERS_FILES]
    names = [x for pair in zip(DIFFUSERS_FILES, variants) for x in (pair[::-1] if half else pair)]
    for name in names:
        if (path / name).is_file():
            return path / name
    present = sorted(p.name for p in path.iterdir())[:12]
    raise WeightsError(f"{path}: a folder without diffusers {subfolder} weights (looked for {', '.join(names)} "
                       f"there and in {subfolder}/; it holds {present or 'nothing'})")


def as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """torch.float32/float16/bfloat16 or their names ('fp32', 'fp16', 'bf16', ...); None keeps the file's dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating type, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: expected one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def _read(path: str | os.PathLike, subfolder: str, detect: Callable[[list[str], str], Format],
          cfg: UNetConfig | VAEConfig, dtype: torch.dtype | str | None) -> tuple[StateDict, str, str]:
    """(state in our names, file, format name). Only the model's keys are read: a single file's text encoder
    never leaves the disk (safetensors) or the memory map (pickles)."""
    dtype = as_dtype(dtype)
    file = resolve(path, subfolder, half=dtype in (torch.float16, torch.bfloat16))
    fmt = detect(read_keys(file), str(file))
    state = read_state_dict(file, keep=fmt.keeps, dtype=dtype)
    return fmt.to_ours(state, cfg, str(file)), str(file), fmt.name


def unet_state_dict(path: str | os.PathLike, cfg: UNetConfig | None = None,
                    dtype: torch.dtype | str | None = None) -> tuple[StateDict, str, str]:
    """The UNet tensors of a file or folder in our names, with the file read and the format recognised (for other
    loaders that build something else from them, e.g. a ReferenceNet)."""
    return _read(path, "unet", detect_unet_format, cfg or sd15_unet(), dtype)


def vae_state_dict(path: str | os.PathLike, cfg: VAEConfig | None = None,
                   dtype: torch.dtype | str | None = None) -> tuple[StateDict, str, str]:
    """The VAE tensors of a file or folder in our names, with the file read and the format recognised."""
    return _read(path, "vae", detect_vae_format, cfg or VAEConfig(), dtype)


def load_unet(path: str | os.PathLike, cfg: UNetConfig | None = None, dtype: torch.dtype | str | None = None,
              device: torch.device | str = "cpu") -> UNet:
    """The SD 1.x UNet from an SD single file (.safetensors/.ckpt), a diffusers `unet/` folder or weight file
    (.safetensors/.bin), a whole diffusers model folder, or our native file. `dtype` None keeps the file's."""
    cfg = cfg or sd15_unet()
    state, file, fmt = unet_state_dict(path, cfg, dtype)
    return build_and_load(lambda: UNet(cfg), state, file, fmt, device=device)


def load_vae(path: str | os.PathLike, cfg: VAEConfig | None = None, dtype: torch.dtype | str | None = None,
             device: torch.device | str = "cpu") -> AutoencoderKL:
    """The SD VAE from an SD single file, a diffusers `vae/` folder or file (current or < 0.14 attention names), a
    standalone VAE file (`vae-ft-mse-840000-ema-pruned.*`), or our native file. `dtype` None keeps the file's."""
    cfg = cfg or VAEConfig()
    state, file, fmt = vae_state_dict(path, cfg, dtype)
    return build_and_load(lambda: AutoencoderKL(cfg), state, file, fmt, device=device)


def vae_config_beside(path: str | os.PathLike, default: VAEConfig | None) -> VAEConfig | None:
    """The architecture of a VAE file we wrote: the `vae_config.json` that tools/train_vae.py writes beside (or, for
    a folder, inside) it, else the VAE entry of the `config.json` of the native model folder it sits in (the bundled
    demo, a training run's frozen/); `default` where there is neither (public files and SD layouts carry no config)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    file, recorded = folder / "vae_config.json", None
    if file.is_file():
        try:
            recorded = json.loads(file.read_text())
        except ValueError as e:
            raise WeightsError(f"{file}: not a VAE architecture written by tools/train_vae.py ({e})") from None
    elif (folder / "config.json").is_file():  # a diffusers config.json is named so too: only ours has "model"
        file = folder / "config.json"
        try:
            recorded = json.loads(file.read_text())["model"]["vae"]
        except (ValueError, KeyError, TypeError):
            return default
    if recorded is None:
        return default
    try:
        return build(VAEConfig, recorded)
    except (ValueError, TypeError) as e:
        raise WeightsError(f"{file}: not a VAE architecture written by tools/train_vae.py or train.py ({e})") from None


def save_native(module: nn.Module, path: str | os.PathLike) -> None:
    """Our native format: the module's state dict as safetensors with our names, written atomically."""
    save_state_dict(module.state_dict(), path, metadata={"format": "aa", "model": type(module).__name__})
