"""Input checks and crash safety shared by sample.py and train.py.

Every check raises `ValueError` with a message that names the flag, so the scripts print one `error:` line and exit
with code 2 before any heavy work. `StopSignals` turns SIGTERM (what schedulers send before a kill) and Ctrl-C into
a request the training loop polls, or into `Stopped` for scripts that should just clean up and leave.
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import tempfile
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it's needed: aa.io.video uses this module without torch
    import torch

EXIT_USAGE = 2  # every bad input and failed write


def check_number(flag: str, value: float | None, *, minimum: float | None = None, above: float | None = None,
                 finite: bool = True) -> None:
    """`value` (if given) is finite and >= minimum / > above; raises ValueError naming `flag`."""
    if value is None:
        return
    if finite and not math.isfinite(value):
        raise ValueError(f"{flag} must be a finite number, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{flag} must be at least {minimum:g}, got {value:g}")
    if above is not None and value <= above:
        raise ValueError(f"{flag} must be greater than {above:g}, got {value:g}")


def check_device(name: str) -> torch.device:
    """A torch device that exists on this machine (a bad name, or cuda/mps without one, is a ValueError)."""
    import torch
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {name}: this machine has {count} CUDA device(s)")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"--device {name}: MPS is not available on this machine")
    elif device.type not in ("cpu", "mps"):
        raise ValueError(f"--device {name}: only cpu, cuda and mps devices can run this")
    return device


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output(flag: str, path: Path | None, suffix: str) -> None:
    """An output path we can write: the right suffix, not a folder, its nearest existing parent a writable
    folder (missing folders are created at write time)."""
    if path is None:
        return
    if path.suffix.lower() != suffix:
        raise ValueError(f"{flag} {path}: must end in {suffix}")
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a folder, expected a {suffix} file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path}: exists and is not writable")
    parent = _existing_ancestor(path.parent)
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: {parent} is not a folder")
    _probe(flag, path, parent)


def check_folder(flag: str, path: Path) -> None:
    """An output folder we can create or write into (not an existing file)."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: exists and is not a folder")
    parent = _existing_ancestor(path)
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: {parent} is not a folder")
    _probe(flag, path, parent)


def _probe(flag: str, path: Path, parent: Path) -> None:
    """Create and remove a temp file in `parent`: a real probe, which catches read-only mounts and special file
    systems that os.access misses (and root, whom os.access always allows)."""
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".probe"):
            pass
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot write in {parent} ({e.strerror or e})") from None


def check_distinct(outputs: dict[str, Path | None]) -> None:
    """No two output flags name the same file."""
    seen: dict[Path, str] = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        key = path.absolute()
        if key in seen:
            raise ValueError(f"{flag} and {seen[key]} are the same file: {path}")
        seen[key] = flag


def make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; returns those it created, outermost first (to remove them again
    when writing into them fails)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def write_failure(path: Path, error: Exception) -> str:
    """One line for a failed write: what, why, and how much room is left where it was written."""
    try:
        free = f"; {shutil.disk_usage(_existing_ancestor(path.parent)).free / 2**20:.0f} MiB free there"
    except OSError:
        free = ""
    return f"{path}: write failed ({getattr(error, 'strerror', None) or error}){free}"


class Stopped(Exception):
    """A stop signal arrived (SIGTERM or Ctrl-C); `code` is the conventional exit status 128 + signal number."""

    def __init__(self, signum: int, message: str = "") -> None:
        self.signum, self.code = signum, 128 + signum
        super().__init__(message or f"stopped by {signal.Signals(signum).name}")


class StopSignals:
    """While active, SIGTERM and SIGINT set `signum` (polling mode) or raise `Stopped` at once (`raise_now`);
    a second Ctrl-C while polling raises at once. Restores the previous handlers on exit. Main thread only."""

    def __init__(self, raise_now: bool = False) -> None:
        self.raise_now, self.signum, self._old = raise_now, 0, {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.raise_now or self.signum == signum == signal.SIGINT:
            raise Stopped(signum)
        self.signum = signum

    def __enter__(self) -> "StopSignals":
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: leave the handlers alone
                pass
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
