"""Our own checkpoint folder: the five networks as safetensors with our (diffusers/AnimateDiff) names, plus JSON.

    config.json            {"model": ModelConfig as a dict, "sampling": the schedule the UNet was trained with,
                            "paths": networks stored elsewhere, e.g. {"vae": "../../frozen/vae.safetensors"}}
    vae.safetensors  image_encoder.safetensors  reference_net.safetensors  unet.safetensors  pose_guider.safetensors

`train.py` writes it (a checkpoint holds the networks that trained and points at the frozen ones), `sample.py` and
the bundled demo read it. Each file is written atomically.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from aa.models.bundle import BUILDERS, NAMES, Models
from aa.models.config import ModelConfig, from_dict, to_dict
from aa.models.temporal import PositionalEncoding
from aa.weights.files import WEIGHTS_README, WeightsError, read_state_dict, save_state_dict
from aa.weights.strict import build_and_load

CONFIG = "config.json"


def save_models(models: Models, folder: str | os.PathLike, sampling: dict | None = None,
                names: tuple[str, ...] = NAMES, paths: dict[str, str] | None = None,
                states: dict[str, dict] | None = None) -> None:
    """Write the networks in `names` and config.json (last, so a folder with a config is complete); `paths` says
    where the others are, relative to the folder; `states` overrides a network's state dict (e.g. gathered shards)."""
    if models.cfg is None:
        raise ValueError("models.cfg is needed to save a native checkpoint")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        state = (states or {}).get(name) or getattr(models, name).state_dict()
        save_state_dict(state, folder / f"{name}.safetensors")
    meta = {"model": to_dict(models.cfg), "sampling": sampling or {}, "paths": paths or {}}
    tmp = folder / f".{CONFIG}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, folder / CONFIG)


def read_config(folder: str | os.PathLike) -> tuple[ModelConfig, dict, dict[str, Path]]:
    """The model configuration, the recorded sampling settings, and the weight file of every network."""
    folder = Path(folder)
    path = folder / CONFIG
    if not path.is_file():
        raise WeightsError(f"{folder}: no {CONFIG}; not an aa checkpoint folder (see {WEIGHTS_README})")
    try:
        meta = json.loads(path.read_text())
        cfg = from_dict(meta["model"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise WeightsError(f"{path}: unreadable model configuration ({e})") from None
    files = {name: folder / meta.get("paths", {}).get(name, f"{name}.safetensors") for name in NAMES}
    return cfg, meta.get("sampling", {}), files


def load_models(folder: str | os.PathLike, dtype: torch.dtype | None = None,
                device: torch.device | str = "cpu") -> tuple[Models, dict]:
    """Load every network of a native folder strictly; returns the models and the recorded sampling settings."""
    cfg, sampling, files = read_config(folder)
    parts = {}
    for name, build in BUILDERS.items():
        path = files[name]
        parts[name] = build_and_load(lambda: build(cfg), read_state_dict(path, dtype=dtype), str(path),
                                     f"aa native {name}", dtype, device)
    return Models(**parts, cfg=cfg), sampling


def export_folder(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy a checkpoint and the frozen networks it points at into one self-contained folder."""
    _, _, files = read_config(source)
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        if not path.is_file():
            raise WeightsError(f"{source}: {name} weights not found at {path}")
        tmp = target / f".{name}.tmp"
        shutil.copyfile(path, tmp)
        os.replace(tmp, target / f"{name}.safetensors")
    meta = json.loads((Path(source) / CONFIG).read_text())
    meta["paths"] = {}
    tmp = target / f".{CONFIG}.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, target / CONFIG)


def export_moore(models: Models, folder: str | os.PathLike) -> None:
    """Write the Moore-AnimateAnyone layout (plain torch pickles of tensors, loadable with weights_only=True):
    denoising_unet.pth (no motion modules), reference_unet.pth, pose_guider.pth, motion_module.pth (if any)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet = {k: v.detach().cpu() for k, v in models.unet.state_dict().items()}
    for name, module in models.unet.named_modules():  # the released files carry the (fixed) sinusoid too
        if isinstance(module, PositionalEncoding):
            unet[f"{name}.pe"] = module.pe.detach().cpu()[None]
    files = {
        "denoising_unet.pth": {k: v for k, v in unet.items() if ".motion_modules." not in k},
        "reference_unet.pth": {k: v.detach().cpu() for k, v in models.reference_net.state_dict().items()},
        "pose_guider.pth": {k: v.detach().cpu() for k, v in models.pose_guider.state_dict().items()},
        "motion_module.pth": {k: v for k, v in unet.items() if ".motion_modules." in k},
    }
    for name, state in files.items():
        if state:
            tmp = folder / f".{name}.tmp"
            torch.save(state, tmp)
            os.replace(tmp, folder / name)
