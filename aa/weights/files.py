"""Reading and writing weight files safely: safetensors, or pickles through `torch.load(weights_only=True)`.

The file kind is sniffed from its first bytes, not its name. Every failure becomes a `WeightsError` that names the
file and says what to do, never a traceback from deep inside torch.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

StateDict = dict[str, Tensor]
WEIGHTS_README = "weights/README.md"


class WeightsError(ValueError):
    """A weights file that is missing, unreadable, of the wrong kind, or whose keys don't match the model."""


def file_kind(path: Path) -> str:
    """'safetensors', 'torch-zip' (torch.save since 1.6), 'torch-legacy' (older pickles), from the first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) == 0:
        raise WeightsError(f"{path}: the file is empty (0 bytes); the download or copy was probably interrupted")
    if head[:2] == b"PK":
        return "torch-zip"
    if head[:1] == b"\x80":
        return "torch-legacy"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    raise WeightsError(f"{path}: not a safetensors or PyTorch weights file (it starts with {head!r})")


def read_state_dict(path: str | os.PathLike, keep: Callable[[str], bool] | None = None,
                    dtype: torch.dtype | None = None) -> StateDict:
    """All tensors of a file (or those whose key passes `keep`), optionally cast to `dtype` one at a time.

    Pickles (.ckpt, .pth, .bin) load with `weights_only=True`, so a file that needs code to run is refused, and
    memory-mapped where the format allows. A top-level {"state_dict": ...} wrapper (LDM .ckpt) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise WeightsError(f"{path} {what}; {WEIGHTS_README} lists the files and where they go")
    kind = file_kind(path)
    keep = keep or (lambda key: True)
    if kind == "safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                state = {k: _cast(f.get_tensor(k), dtype) for k in f.keys() if keep(k)}
        except (SafetensorError, OSError, RuntimeError) as e:
            raise WeightsError(f"{path}: unreadable safetensors file ({e}); is it truncated?") from None
        return state
    state = _load_pickle(path, kind)
    return {k: _cast(v, dtype) for k, v in state.items() if keep(k)}


def _load_pickle(path: Path, kind: str) -> StateDict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "torch-zip")
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"{path}: refused to unpickle: the file asks to run code or build objects that plain weights never need "
            f"(torch.load weights_only=True stopped it: {str(e).splitlines()[0]}). Use a .safetensors copy, or "
            f"re-save the weights with torch.save(state_dict) from a trusted source") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise WeightsError(f"{path}: unreadable PyTorch file ({str(e).splitlines()[0]}); is it truncated?") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a dict of tensors")
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise WeightsError(f"{path}: holds no tensors (keys: {list(obj)[:5]})")
    return tensors


def _cast(t: Tensor, dtype: torch.dtype | None) -> Tensor:
    # MusePose's fp16 files hold views of one large buffer: clone so each tensor owns just its own storage
    if dtype is not None and t.is_floating_point() and t.dtype != dtype:
        return t.to(dtype)
    if t.untyped_storage().nbytes() > t.numel() * t.element_size():
        return t.clone()
    return t


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_state_dict(state: StateDict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors atomically (temp file, then rename): a crash never leaves a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates files 0600; give them the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
