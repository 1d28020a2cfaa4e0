"""What is this weights file? A sniffer over key names, for error messages that say what a file is instead.

`describe(keys)` returns a noun phrase ("an SD VAE in diffusers names", "a CLIP image encoder (transformers
names)") that reads after "it looks like". Loaders call it when a file is not the kind they expect. The
signatures come from the key lists in `formats/` (see tests/data/formats).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from safetensors import SafetensorError, safe_open

from aa.weights.files import WeightsError, file_kind, read_state_dict


def _prefixed(prefix: str) -> Callable[[set[str]], bool]:
    return lambda keys: any(k.startswith(prefix) for k in keys)


def _containing(part: str) -> Callable[[set[str]], bool]:
    return lambda keys: any(part in k for k in keys)


def _has(*names: str) -> Callable[[set[str]], bool]:
    return lambda keys: all(n in keys for n in names)


def _diffusers_unet(keys: set[str]) -> bool:
    return "conv_in.weight" in keys and "time_embedding.linear_1.weight" in keys and _prefixed("down_blocks.")(keys)


def _pose_guider(keys: set[str]) -> bool:
    return len(keys) < 64 and _has("conv_in.weight", "conv_out.weight")(keys) and _prefixed("blocks.")(keys)


# (kind, phrase, test). A file may hold several kinds: an SD single file holds a UNet, a VAE and a text encoder.
KINDS: list[tuple[str, str, Callable[[set[str]], bool]]] = [
    ("ldm-unet", "a UNet in LDM names (`model.diffusion_model.*`)", _prefixed("model.diffusion_model.")),
    ("ldm-vae", "a VAE in LDM names (`first_stage_model.*`)", _prefixed("first_stage_model.")),
    ("ldm-text-encoder", "a CLIP text encoder (`cond_stage_model.*`)", _prefixed("cond_stage_model.")),
    ("controlnet", "a ControlNet",
     lambda k: _prefixed("controlnet_cond_embedding.")(k) or _prefixed("control_model.")(k)),
    ("unet", "an SD UNet in diffusers names", _diffusers_unet),
    ("vae", "an SD VAE in diffusers names", _has("encoder.down_blocks.0.resnets.0.conv1.weight")),
    ("vae-ldm", "an SD VAE in LDM names without a prefix (like vae-ft-mse-840000-ema-pruned)",
     _has("encoder.down.0.block.0.conv1.weight")),
    ("clip-image", "a CLIP image encoder (transformers names)", _has("vision_model.embeddings.patch_embedding.weight")),
    ("clip-text", "a CLIP text encoder (transformers names)",
     lambda k: any(x.endswith("text_model.embeddings.token_embedding.weight") for x in k)
     and not _prefixed("cond_stage_model.")(k)),
    ("animatediff", "AnimateDiff motion modules",
     lambda k: _containing(".temporal_transformer.")(k) and not _diffusers_unet(k)),
    ("motion-adapter", "a diffusers MotionAdapter (motion modules)",
     lambda k: _containing("motion_modules.")(k) and not _containing(".temporal_transformer.")(k)
     and not _diffusers_unet(k)),
    ("pose-guider", "a Pose Guider (Moore-AnimateAnyone / novita layout)", _pose_guider),
]


def kinds(keys: Iterable[str]) -> list[str]:
    """The kinds of weights found among `keys`, in `KINDS` order (empty when nothing is recognised)."""
    keys = set(keys)
    return [kind for kind, _, test in KINDS if test(keys)]


def describe(keys: Iterable[str]) -> str:
    """A noun phrase for what the keys look like, e.g. "an SD single file (...)" or "AnimateDiff motion modules"."""
    keys = set(keys)
    if not keys:
        return "an empty file (no tensors)"
    found = kinds(keys)
    phrases = {kind: phrase for kind, phrase, _ in KINDS}
    if "controlnet" in found:  # a diffusers ControlNet also has a UNet's encoder half
        return phrases["controlnet"]
    if {"ldm-unet", "ldm-vae"} & set(found):
        return "an SD single file holding " + _join([phrases[k] for k in found])
    if "unet" in found:
        extras = [("conv_out.weight" not in keys, "without the output head (like Moore's reference_unet.pth)"),
                  (_containing("motion_modules.")(keys), "with motion modules")]
        return " ".join([phrases["unet"], *(text for cond, text in extras if cond)])
    if "vae" in found and _containing("attentions.0.query.")(keys):
        return "an SD VAE in diffusers names from diffusers < 0.14 (`query/key/value/proj_attn` attention)"
    if found:
        return _join([phrases[k] for k in found])
    first = sorted(keys)[:3]
    return f"no weights this project knows ({len(keys)} tensors, e.g. {', '.join(first)})"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def read_keys(path: str | os.PathLike) -> list[str]:
    """The tensor names of a weights file. A safetensors header is read without touching the tensors; pickles are
    opened memory-mapped (zip) through `read_state_dict`, with its checks and errors."""
    path = Path(path)
    if path.is_file() and file_kind(path) == "safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                return list(f.keys())
        except (SafetensorError, OSError) as e:
            raise WeightsError(f"{path}: unreadable safetensors file ({e}); is it truncated?") from None
    return list(read_state_dict(path))
