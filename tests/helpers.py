"""Helpers shared by tests (not tests themselves)."""
from __future__ import annotations

import json
import weakref
from pathlib import Path

import torch
from safetensors import safe_open
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from aa.config import UNetConfig, VAEConfig


class PeakTensorMemory(TorchDispatchMode):
    """Tracks the bytes of tensor storages created inside the block that are alive at once; `peak` is the maximum.

    Works on CPU, where torch has no allocator statistics: every op's outputs are registered and released through a
    weakref finaliser on their storage.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and not t.is_meta:
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if storage.nbytes() == 0 or key in self.live:
                    continue
                self.live[key] = storage.nbytes()
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
                weakref.finalize(storage, self._release, key)
        return out

    def _release(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)


FORMATS_DIR = Path(__file__).parent / "data" / "formats"
GOLDEN_SD_DIR = Path(__file__).parent / "data" / "golden_sd"


def read_format_list(name: str) -> dict[str, tuple[int, ...]]:
    """A formats/ list (`key [d0, d1, ...] dtype` a line) -> {key: shape}."""
    out = {}
    for line in (FORMATS_DIR / name).read_text().splitlines():
        if line.strip():
            key, rest = line.split(" ", 1)
            out[key] = tuple(json.loads(rest.rsplit(" ", 1)[0]))
    return out


def golden_sd_configs() -> tuple[UNetConfig, VAEConfig]:
    """The UNet and VAE configs tools/make_golden_sd.py built its reference models with (stored in its files)."""
    with safe_open(str(GOLDEN_SD_DIR / "io.safetensors"), framework="pt") as f:
        meta = f.metadata()
    tuples = lambda d: {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}  # noqa: E731
    return UNetConfig(**tuples(json.loads(meta["unet"]))), VAEConfig(**tuples(json.loads(meta["vae"])))
