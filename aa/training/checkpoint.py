"""Training checkpoints: the trainable networks as a native model folder plus the optimizer state, written atomically.

    run/checkpoints/step_000200/   config.json + unet/reference_net/pose_guider .safetensors (loadable by sample.py),
                                   train_state.pt (step, optimizer, grad scaler)
    run/frozen/                    the frozen networks (VAE, image encoder), written once; config.json points there

A checkpoint folder is built under a temporary name and renamed when complete; only the newest `keep` stay.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..models import Models
from ..weights.native import save_models

STATE = "train_state.pt"


def step_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:07d}"


def save_checkpoint(run: Path, step: int, models: Models, trainable: tuple[str, ...], frozen: tuple[str, ...],
                    state: dict, sampling: dict, keep: int, states: dict[str, dict] | None = None) -> Path:
    """Write step `step` (trainable networks + optimizer state), then drop all but the newest `keep` checkpoints;
    the frozen networks are written once, to run/frozen. `states` gives the networks' whole state dicts when they
    are sharded (FSDP)."""
    final = step_dir(run, step)
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    frozen_dir = run / "frozen"
    if frozen and not (frozen_dir / "config.json").is_file():
        save_models(models, frozen_dir, sampling, names=frozen, states=states)
    paths = {name: os.path.relpath(frozen_dir / f"{name}.safetensors", final) for name in frozen}
    save_models(models, tmp, sampling, names=trainable, paths=paths, states=states)
    torch.save({**state, "step": step}, tmp / STATE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted((run / "checkpoints").glob("step_*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run: Path) -> Path | None:
    """The newest complete checkpoint of a run (None if there is none)."""
    done = sorted(p for p in (run / "checkpoints").glob("step_*") if (p / STATE).is_file())
    return done[-1] if done else None


def load_train_state(folder: Path) -> dict:
    """Step, optimizer and scaler state of a checkpoint (a plain dict of tensors and numbers)."""
    return torch.load(folder / STATE, map_location="cpu", weights_only=True)
