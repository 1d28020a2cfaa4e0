"""Training checkpoints: the trainable networks as a native model folder plus the optimizer state, written atomically.

    run/checkpoints/step_000200/   config.json + unet/reference_net/pose_guider .safetensors (loadable by sample.py),
                                   train_state.pt (step, optimizer, grad scaler)
    run/frozen/                    the frozen networks (VAE, image encoder), written once; config.json points there

A checkpoint folder is built under a temporary name (`.step_N.tmp<pid>`) and renamed when complete; only the newest
`keep` stay. A folder is deleted by renaming it to `.step_N.old<pid>` first, so a crash never leaves a half-deleted
`step_N`; `clean_stale` removes what killed runs left (temp and doomed folders of processes no longer alive).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError

from aa.io.cli import write_failure
from aa.models.bundle import Models
from aa.weights.native import save_models

STATE = "train_state.pt"
LEFTOVER = re.compile(r"\.step_\d+\.(tmp|old)(\d+)")  # what `save_checkpoint` and `_remove` leave when killed
FROZEN_LEFTOVER = re.compile(r"\.\w+\.(?:safetensors|json)\.tmp(\d+)")  # `save_models`' temp files in frozen/


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
    try:
        if frozen and not (frozen_dir / "config.json").is_file():
            save_models(models, frozen_dir, sampling, names=frozen, states=states)
        paths = {name: os.path.relpath(frozen_dir / f"{name}.safetensors", final) for name in frozen}
        save_models(models, tmp, sampling, names=trainable, paths=paths, states=states)
        torch.save({**state, "step": step}, tmp / STATE)
    except BaseException as e:  # disk full, Ctrl-C: leave no temp folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (OSError, SafetensorError)):  # safetensors reports a full disk as its own error
            raise OSError(getattr(e, "errno", None), f"checkpoint step {step}: {write_failure(tmp, e)}") from None
        raise
    if final.exists():
        _remove(final)
    os.replace(tmp, final)
    for old in sorted((run / "checkpoints").glob("step_*"))[:-keep] if keep > 0 else []:
        _remove(old)
    return final


def _remove(folder: Path) -> None:
    """Delete a checkpoint folder crash-safely: rename it out of the `step_*` namespace, then delete it."""
    doomed = folder.with_name(f".{folder.name}.old{os.getpid()}")
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale(run: Path) -> list[Path]:
    """Remove the temp and half-deleted checkpoint folders of dead processes (ours included: this run has written
    nothing yet) and frozen/'s temp files; only names this layout creates. Returns what was removed."""
    removed = []
    folder = run / "checkpoints"
    for path in sorted(folder.glob(".step_*")) if folder.is_dir() else []:
        m = LEFTOVER.fullmatch(path.name)
        if m and (int(m.group(2)) == os.getpid() or not _alive(int(m.group(2)))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    for path in sorted((run / "frozen").glob(".*.tmp*")) if (run / "frozen").is_dir() else []:
        m = FROZEN_LEFTOVER.fullmatch(path.name)
        if m and (int(m.group(1)) == os.getpid() or not _alive(int(m.group(1)))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def latest_checkpoint(run: Path) -> Path | None:
    """The newest complete checkpoint of a run (None if there is none)."""
    done = sorted(p for p in (run / "checkpoints").glob("step_*") if (p / STATE).is_file())
    return done[-1] if done else None


def load_train_state(folder: Path) -> dict:
    """Step, optimizer and scaler state of a checkpoint (a plain dict of tensors and numbers)."""
    return torch.load(folder / STATE, map_location="cpu", weights_only=True)
