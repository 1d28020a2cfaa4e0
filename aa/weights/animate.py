"""AnimateDiff motion modules from any public file, with the version read off the keys.

Formats: AnimateDiff's own files (`mm_sd_v15.ckpt` v1, `mm_sd_v15_v2.ckpt` v2, `v3_sd15_mm.ckpt` v3, their
`.safetensors` twins, Moore-AnimateAnyone's `motion_module.pth`), whose names are already ours, and a diffusers
`MotionAdapter` folder, renamed by `DIFFUSERS_RULES`. The version: a mid-block module means v2; without one, the
stored sinusoid's length tells v1 (24) from v3 (32). v1 was trained with ResNet norms pooled over frames, so its
config asks the UNet for that. Every stored `pos_encoder.pe` / `pos_embed.pe` is checked against the formula and
dropped (the model rebuilds it): the only allowed drop.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from aa.models.config import MotionConfig, UNetConfig
from aa.models.temporal import sinusoid_table
from aa.models.unet import UNet
from aa.weights.detect import describe
from aa.weights.files import WEIGHTS_README, StateDict, WeightsError, read_state_dict
from aa.weights.native import CONFIG, read_config
from aa.weights.sd import as_dtype
from aa.weights.strict import check_keys, rebuild_buffers

# diffusers MotionAdapter -> AnimateDiff names, in order (formats/map_animatediff_to_diffusers_motion_adapter.tsv)
DIFFUSERS_RULES: list[tuple[str, str | Callable[[re.Match], str]]] = [
    # AnimateDiff wraps each module's transformer in `temporal_transformer`
    (r"(\.motion_modules\.\d+\.)", r"\1temporal_transformer."),
    # the two temporal self-attentions: attn1/attn2 -> attention_blocks.0/1
    (r"\.attn(\d+)\.", lambda m: f".attention_blocks.{int(m[1]) - 1}."),
    # their pre-LayerNorms: norm1/norm2 -> norms.0/1
    (r"\.norm([12])\.", lambda m: f".norms.{int(m[1]) - 1}."),
    # the feed-forward's LayerNorm
    (r"\.norm3\.", ".ff_norm."),
]

PE_KEY = re.compile(r"\.(pos_encoder|pos_embed)\.pe$")  # AnimateDiff: one per attention; diffusers: one per block
ANIMATEDIFF_KEY = re.compile(r"\.motion_modules\.\d+\.temporal_transformer\.")
DIFFUSERS_KEY = re.compile(r"\.motion_modules\.\d+\.(norm|proj_in|proj_out|transformer_blocks)\.")
ADAPTER_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
# how far a stored sinusoid may sit from the formula: fp16/bf16 rounding; 1e-4 otherwise (another machine's sin/cos)
PE_TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1e-2}
RELEASES = {(False, 24): "v1", (True, 32): "v2", (False, 32): "v3"}  # (mid-block module, pe length) -> version


def rename_diffusers(key: str) -> str:
    """A diffusers MotionAdapter key -> the AnimateDiff key (`DIFFUSERS_RULES`)."""
    for pattern, repl in DIFFUSERS_RULES:
        key = re.sub(pattern, repl, key)
    return key


def check_sinusoid(pe: Tensor, key: str, source: str) -> int:
    """A stored positional table (1, L, C) must be the fixed sinusoid `sinusoid_table` computes; returns L."""
    if pe.ndim != 3 or pe.shape[0] != 1:
        raise WeightsError(f"{source}: {key} has shape {tuple(pe.shape)}; a positional table is (1, length, channels)")
    table = sinusoid_table(pe.shape[1], pe.shape[2])
    err = (pe[0].float() - table).abs().max().item()
    tol = PE_TOLERANCE.get(pe.dtype, 1e-4)
    if not err <= tol:
        raise WeightsError(
            f"{source}: {key} is not the sinusoid pe[p, 2i] = sin(p / 10000^(2i/C)), pe[p, 2i+1] = cos(...) "
            f"(max difference {err:.3g} > {tol:g} for {pe.dtype}). The model regenerates that table rather than "
            f"loading it, so these motion modules would not compute what they were trained to")
    return pe.shape[1]


def motion_modules_from_state(state: StateDict, source: str, cfg: UNetConfig | None = None,
                              num_heads: int | None = None) -> tuple[StateDict, MotionConfig, str]:
    """Recognise, rename, check the sinusoids, detect the version, check strictly against `cfg`'s UNet.

    Returns our state (no pe), the config, and the format's description for later messages. `cfg` gives the widths
    (SD 1.5 by default); `num_heads`, which no AnimateDiff file stores, defaults to `cfg.motion`'s or 8.
    """
    cfg = cfg or UNetConfig()
    if any(ANIMATEDIFF_KEY.search(k) for k in state):
        layout = "AnimateDiff"
    elif any(DIFFUSERS_KEY.search(k) for k in state):
        layout = "diffusers MotionAdapter"
    else:
        raise WeightsError(f"{source}: no motion-module keys (`*.motion_modules.N.temporal_transformer.*` or a "
                           f"diffusers MotionAdapter's `*.motion_modules.N.transformer_blocks.*`); it looks like "
                           f"{describe(state.keys())}")
    lengths = {k: check_sinusoid(v, k, source) for k, v in state.items() if PE_KEY.search(k)}
    state = {k: v for k, v in state.items() if k not in lengths}
    if layout != "AnimateDiff":
        state = {rename_diffusers(k): v for k, v in state.items()}

    mid = any(k.startswith("mid_block.motion_modules.") for k in state)
    if len(set(lengths.values())) > 1:
        raise WeightsError(f"{source}: positional tables of different lengths {sorted(set(lengths.values()))}")
    if not lengths and not mid:
        raise WeightsError(f"{source}: stores no positional table, so AnimateDiff v1 (length 24) cannot be told from "
                           f"v3 (length 32)")
    max_len = next(iter(lengths.values()), 32)
    version = RELEASES.get((mid, max_len))
    blocks = {int(m[1]) for k in state if (m := re.search(r"\.attention_blocks\.(\d+)\.", k))}
    heads = num_heads or (cfg.motion.num_heads if cfg.motion else MotionConfig().num_heads)
    motion = MotionConfig(num_heads=heads, num_blocks=max(blocks) + 1 if blocks else MotionConfig().num_blocks,
                          max_len=max_len, mid_block=mid, pooled_resnet_norm=version == "v1")
    fmt = (f"{layout} motion modules, AnimateDiff {version}" if version else
           f"{layout} motion modules (pe length {max_len}, {'with' if mid else 'no'} mid block: not a released "
           f"AnimateDiff version; per-frame ResNet norms assumed)")
    check_keys(motion_shapes(replace(cfg, motion=motion)), state, source, fmt)
    return state, motion, fmt


def is_native_folder(path: Path) -> bool:
    """An aa model folder (config.json beside our network files), not a diffusers MotionAdapter folder."""
    return (path / CONFIG).is_file() and not any((path / name).is_file() for name in ADAPTER_FILES)


def native_motion_modules(folder: Path, cfg: UNetConfig, dtype: torch.dtype | None = None
                          ) -> tuple[StateDict, MotionConfig]:
    """The temporal layers of an aa model folder's UNet, checked strictly against the UNet `cfg` describes."""
    model_cfg, _, files = read_config(folder)
    motion = model_cfg.unet.motion
    if motion is None:
        raise WeightsError(f"{folder}: its UNet has no temporal layers (a stage-1 checkpoint?); pass a stage-2 "
                           f"checkpoint or an AnimateDiff file")
    state = read_state_dict(files["unet"], keep=lambda k: ".motion_modules." in k, dtype=dtype)
    check_keys(motion_shapes(replace(cfg, motion=motion)), state, str(files["unet"]), "aa native motion modules")
    return state, motion


def motion_shapes(cfg: UNetConfig) -> dict[str, torch.Size]:
    """Names and shapes of the motion-module tensors of the UNet `cfg` describes (built on the meta device)."""
    with torch.device("meta"):
        unet = UNet(cfg)
    return {k: v.shape for k, v in unet.state_dict().items() if ".motion_modules." in k}


def read_motion_file(path: Path, dtype: torch.dtype | None = None) -> StateDict:
    """All tensors, cast to `dtype` but for the positional tables: the check's tolerance follows their stored dtype."""
    if dtype is None:
        return read_state_dict(path)
    tables = read_state_dict(path, keep=lambda k: bool(PE_KEY.search(k)))
    return read_state_dict(path, keep=lambda k: not PE_KEY.search(k), dtype=dtype) | tables


def _read(path: Path, dtype: torch.dtype | None) -> tuple[StateDict, Path, dict]:
    """The tensors of a file or a diffusers folder, the file read, and the folder's config.json (or {})."""
    if path.is_dir():
        found = [path / name for name in ADAPTER_FILES if (path / name).is_file()]
        if not found:
            present = sorted(p.name for p in path.iterdir())
            raise WeightsError(f"{path}: a folder without {' or '.join(ADAPTER_FILES)}, so not a diffusers "
                               f"MotionAdapter folder (it holds {present or 'nothing'}); {WEIGHTS_README} lists "
                               f"the motion-module files")
        path = found[0]
    state = read_motion_file(path, dtype)
    config = path.parent / "config.json"
    meta = json.loads(config.read_text()) if path.name in ADAPTER_FILES and config.is_file() else {}
    return state, path, meta


def load_motion_modules(path: str | os.PathLike, cfg: UNetConfig | None = None, *, num_heads: int | None = None,
                        dtype: torch.dtype | str | None = None) -> tuple[StateDict, MotionConfig]:
    """Motion modules from an AnimateDiff/Moore file, a diffusers MotionAdapter folder, or the UNet of one of our
    model folders (an earlier stage-2 run, the bundled demo; its recorded config, heads included, is used):
    (our state, config).

    The state has our key names (`down_blocks.0.motion_modules.0.temporal_transformer...`), no positional tables,
    and was checked strictly against the UNet `cfg` describes (SD 1.5 by default). The config is the detected
    version's. Heads, which AnimateDiff files don't store: `num_heads`, else a diffusers config.json's, else
    `cfg.motion`'s, else 8 (every released file). `insert_motion_modules` puts them into a UNet.
    """
    if is_native_folder(Path(path)):
        return native_motion_modules(Path(path), cfg or UNetConfig(), as_dtype(dtype))
    state, file, meta = _read(Path(path), as_dtype(dtype))
    heads = num_heads or meta.get("motion_num_attention_heads")
    if isinstance(heads, (list, tuple)):
        if len(set(heads)) != 1:
            raise WeightsError(f"{file}: config.json asks for different head counts per level {heads}; "
                               f"AnimateDiff modules use one")
        heads = heads[0]
    state, motion, _ = motion_modules_from_state(state, str(file), cfg, heads)
    return state, motion


def insert_motion_modules(unet: UNet, path: str | os.PathLike, num_heads: int | None = None) -> MotionConfig:
    """Load motion modules into `unet`, replacing any it has: training stage 2's init (paper 3.3) or inference
    with a stage-1 UNet. They are built on the meta device and the file's tensors assigned (cast to the UNet's
    dtype and device), so no random init is paid for. v1 also pools the ResNet norms over frames, as it was trained."""
    state, motion = load_motion_modules(path, unet.cfg, num_heads=num_heads)
    like = unet.conv_in.weight
    with torch.device("meta"):
        unet.add_motion_modules(motion)
    state = {k: v.to(like.device, like.dtype if v.is_floating_point() else v.dtype) for k, v in state.items()}
    result = unet.load_state_dict(state, strict=False, assign=True)
    assert not result.unexpected_keys, f"checked keys not in the UNet: {result.unexpected_keys[:5]}"
    rebuild_buffers(unet, like.device)
    return motion
