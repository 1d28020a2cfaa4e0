"""Assemble the five networks for sampling from what the user has: a native folder, a Moore-AnimateAnyone folder
with the SD VAE and CLIP image encoder, or the parts one by one (weights/README.md lists the public files)."""
from __future__ import annotations

import os
from dataclasses import fields, replace
from pathlib import Path

import torch

from aa.models.bundle import Models
from aa.models.config import ModelConfig, sd15_unet
from aa.models.pose_guider import PoseGuider
from aa.models.reference import ReferenceNet, reference_state
from aa.sampling.pipeline import Settings
from aa.weights.animate import insert_motion_modules
from aa.weights.clip import load_clip
from aa.weights.files import WEIGHTS_README, WeightsError, read_state_dict
from aa.weights.moore import load_moore, pose_guider_config
from aa.weights.native import load_models
from aa.weights.sd import load_unet, load_vae, unet_state_dict
from aa.weights.strict import build_and_load

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "weights"
VAE_PLACES = ("sd-vae-ft-mse", "stable-diffusion-v1-5/vae")
CLIP_PLACES = ("image_encoder", "sd-image-variations-diffusers/image_encoder")
MOORE_SIZE = (512, 768)  # width, height of the released model's inference (configs/prompts/animation.yaml)


def _find(given: str | os.PathLike | None, folders: list[Path], places: tuple[str, ...], what: str,
          flag: str) -> Path:
    """`given`, else the first of `places` that exists under `folders`; a clear error naming both otherwise."""
    if given is not None:
        return Path(given)
    candidates = [f / p for f in folders for p in places]
    for c in candidates:
        if c.exists():
            return c
    raise WeightsError(f"the {what} is needed: pass {flag}, or put it at one of "
                       f"{', '.join(str(c) for c in candidates)} (see {WEIGHTS_README})")


def sampling_fields(recorded: dict) -> dict:
    """The entries of a checkpoint's recorded settings that are sampling settings (prediction, schedule, ...)."""
    names = {f.name for f in fields(Settings)}
    return {k: v for k, v in recorded.items() if k in names}


def load_for_sampling(*, weights: str | os.PathLike | None = None, moore: str | os.PathLike | None = None,
                      unet: str | os.PathLike | None = None, reference_unet: str | os.PathLike | None = None,
                      motion: str | os.PathLike | None = None, pose_guider: str | os.PathLike | None = None,
                      vae: str | os.PathLike | None = None, clip: str | os.PathLike | None = None,
                      cfg: ModelConfig | None = None, dtype: torch.dtype | None = None,
                      device: torch.device | str = "cpu") -> tuple[Models, dict, tuple[int, int]]:
    """The networks, the sampling settings their training recorded, and the default (width, height).

    `cfg` is the architecture of public-format weights (SD 1.5 + AnimateDiff v2 by default; heads and norm groups
    can't be read from shapes); native folders carry their own."""
    if weights is not None:
        models, recorded = load_models(weights, dtype, device)
        size = (recorded.get("width", MOORE_SIZE[0]), recorded.get("height", MOORE_SIZE[1]))
        return models, sampling_fields(recorded), size
    if moore is None and unet is None:
        raise WeightsError(f"no weights given: pass --weights (a native folder), --moore (a Moore-AnimateAnyone "
                           f"folder) or --unet and the other parts; {WEIGHTS_README} says where to get them")
    cfg = cfg or ModelConfig(unet=sd15_unet())
    folders = [Path(moore), Path(moore).parent, WEIGHTS] if moore is not None else [WEIGHTS]
    vae_model = load_vae(_find(vae, folders, VAE_PLACES, "SD VAE (stabilityai/sd-vae-ft-mse)", "--vae"),
                         cfg.vae, dtype=dtype, device=device)
    clip_model = load_clip(_find(clip, folders, CLIP_PLACES, "CLIP image encoder (lambdalabs/"
                                 "sd-image-variations-diffusers, image_encoder/)", "--clip"), cfg.clip, dtype=dtype,
                           device=device)
    if moore is not None:
        m = load_moore(moore, cfg.unet, dtype=dtype, device=device)
        denoise, ref, guider = m.denoising_unet, m.reference_net, m.pose_guider
    else:
        if pose_guider is None:
            raise WeightsError(f"--unet needs --pose-guider (a trained pose_guider.pth; {WEIGHTS_README})")
        stage1 = replace(cfg.unet, motion=None)
        denoise = load_unet(unet, stage1, dtype=dtype, device=device)
        if motion is not None:
            insert_motion_modules(denoise, motion)
        state, file, fmt = unet_state_dict(reference_unet or unet, stage1, dtype)
        ref = build_and_load(lambda: ReferenceNet(stage1), reference_state(state), file, fmt, dtype, device)
        pose_state = read_state_dict(pose_guider, dtype=dtype)
        pose_cfg = pose_guider_config(pose_state, str(pose_guider), denoise.cfg)
        guider = build_and_load(lambda: PoseGuider(pose_cfg), pose_state, str(pose_guider), "Pose Guider", dtype,
                                device)
    cfg = ModelConfig(unet=denoise.cfg, vae=vae_model.cfg, clip=clip_model.cfg, pose_guider=guider.cfg)
    models = Models(vae_model, clip_model, ref, denoise, guider, cfg)
    return models, {}, MOORE_SIZE


def demo_missing(folder: Path) -> WeightsError:
    return WeightsError(f"the bundled demo model is missing at {folder}: restore it with `git checkout -- "
                        f"{folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder}`, or pass weights "
                        f"(--weights, --moore, or --unet ...; see {WEIGHTS_README})")

