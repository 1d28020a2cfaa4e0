"""Strict loading: the converted keys must equal the model's, or the error says exactly what differs.

Models are built on the `meta` device and the file's tensors are assigned in place (`load_state_dict(assign=True)`),
so loading needs no random init and no second full copy of the weights.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import torch
from torch import nn

from aa.weights.files import StateDict, WeightsError


def group_keys(keys: Iterable[str], limit: int = 6, depth: int = 3) -> str:
    """'down_blocks.0.attentions (12 keys, e.g. down_blocks.0.attentions.0.norm.weight); ...' for the first prefixes."""
    groups: dict[str, list[str]] = defaultdict(list)
    for k in sorted(keys):
        groups[".".join(k.split(".")[:depth])].append(k)
    parts = [f"{p} ({len(ks)} key{'s' * (len(ks) > 1)}, e.g. {ks[0]})" for p, ks in list(groups.items())[:limit]]
    more = len(groups) - limit
    return "; ".join(parts) + (f"; and {more} more group{'s' * (more > 1)}" if more > 0 else "")


def check_keys(expected: dict[str, torch.Size], state: StateDict, source: str, fmt: str) -> None:
    """Raise a WeightsError naming the file, the format recognised and the offending keys, grouped by prefix."""
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k])}"
             for k in sorted(expected.keys() & state.keys()) if state[k].shape != expected[k]]
    if not (missing or unexpected or wrong):
        return
    lines = [f"{source}: recognised as {fmt}, but its tensors don't match the model."]
    if missing:
        lines.append(f"  missing {len(missing)}: {group_keys(missing)}")
    if unexpected:
        lines.append(f"  unexpected {len(unexpected)}: {group_keys(unexpected)}")
    if wrong:
        lines.append(f"  wrong shape {len(wrong)}: " + "; ".join(wrong[:5]))
    raise WeightsError("\n".join(lines))


def build_and_load(build: Callable[[], nn.Module], state: StateDict, source: str, fmt: str,
                   dtype: torch.dtype | None = None, device: torch.device | str = "cpu") -> nn.Module:
    """Build a model on the meta device, check the keys strictly, assign the tensors, move to dtype/device.

    Non-persistent buffers (the motion modules' sinusoid) are rebuilt on `device` after the assignment.
    """
    with torch.device("meta"):
        model = build()
    check_keys({k: v.shape for k, v in model.state_dict().items()}, state, source, fmt)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    rebuild_buffers(model, device)
    return model.to(device)


def rebuild_buffers(model: nn.Module, device: torch.device | str = "cpu") -> None:
    """Recreate buffers left on the meta device by a meta build (modules that own such buffers define
    `reset_buffers()`); any other meta tensor left over is a bug in the loader."""
    for module in model.modules():
        if hasattr(module, "reset_buffers") and any(b.is_meta for b in module.buffers(recurse=False)):
            module.reset_buffers(device)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"tensors left on the meta device after loading: {left[:5]}")
