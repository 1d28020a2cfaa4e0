"""Moore-AnimateAnyone weight folders (and the novita-ai and MusePose retrains of the same code).

    denoising_unet.pth   SD 1.5 UNet, diffusers names (686 tensors), no motion modules
    reference_unet.pth   the same without conv_norm_out/conv_out (682): the ReferenceNet
    motion_module.pth    AnimateDiff v2 motion modules (588 tensors, pe length 32); absent after stage 1
    pose_guider.pth      16 tensors; the variant (Moore 16/32/96/256, novita 16/32/64/128, paper -> 4) from shapes

Names are ours already: every file loads strictly with no renaming. fp32 (Moore, novita) or fp16 (MusePose, whose
tensors are views of one big buffer: `read_state_dict` gives each its own storage).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from aa.models.config import MotionConfig, PoseGuiderConfig, UNetConfig
from aa.models.pose_guider import PoseGuider
from aa.models.reference import ReferenceNet
from aa.models.unet import UNet
from aa.weights.animate import motion_modules_from_state, read_motion_file
from aa.weights.detect import describe
from aa.weights.files import WEIGHTS_README, StateDict, WeightsError, read_state_dict
from aa.weights.sd import as_dtype
from aa.weights.strict import build_and_load, check_keys

FILES = ("denoising_unet.pth", "reference_unet.pth", "pose_guider.pth", "motion_module.pth")


@dataclass
class MooreWeights:
    """A loaded Moore-AnimateAnyone folder: the three trained networks and the motion config (None: stage 1)."""

    denoising_unet: UNet
    reference_net: ReferenceNet
    pose_guider: PoseGuider
    motion: MotionConfig | None


def pose_guider_config(state: StateDict, source: str, unet: UNetConfig) -> PoseGuiderConfig:
    """The Pose Guider variant from its shapes: conv_in's width, then each stage's stride-2 conv (blocks 1, 3, ...);
    a 320-channel conv_out is added after the UNet's conv_in (released), a 4-channel one to the latent (paper)."""
    blocks = sorted({int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.weight$", k))})
    if "conv_in.weight" not in state or "conv_out.weight" not in state or len(blocks) % 2:
        raise WeightsError(f"{source}: not a Pose Guider (conv_in, blocks.0..2k-1, conv_out); it looks like "
                           f"{describe(state.keys())}")
    conv_in, out = state["conv_in.weight"].shape, state["conv_out.weight"].shape[0]
    channels = (conv_in[0], *(state[f"blocks.{i}.weight"].shape[0] for i in blocks[1::2]))
    if out not in (unet.block_out_channels[0], unet.in_channels):
        raise WeightsError(f"{source}: conv_out gives {out} channels, neither the UNet's conv_in width "
                           f"{unet.block_out_channels[0]} (released variant) nor the latent's {unet.in_channels} "
                           f"(paper variant)")
    adds_to = "conv_in" if out == unet.block_out_channels[0] else "latent"
    return PoseGuiderConfig(in_channels=conv_in[1], channels=channels, out_channels=out, adds_to=adds_to)


def load_moore(folder: str | os.PathLike, cfg: UNetConfig | None = None, *, video: bool = True,
               dtype: torch.dtype | str | None = None, device: torch.device | str = "cpu") -> MooreWeights:
    """Load a Moore-AnimateAnyone weights folder strictly.

    `cfg`: the UNets' layout (SD 1.5 by default; its `motion`, if any, gives only the head count: the motion config
    is detected from motion_module.pth). `video=False` loads a stage-1 folder, which has no motion_module.pth.
    `dtype` (a torch dtype or 'fp16', 'bf16', ...) casts while reading; None keeps the files' (fp32, MusePose fp16).
    """
    folder, dtype = Path(folder), as_dtype(dtype)
    cfg = cfg or UNetConfig()
    needed = FILES if video else FILES[:3]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        where = f"holds {', '.join(present)}" if present else ("is empty" if folder.is_dir() else "does not exist")
        hint = " (a stage-1 folder has no motion module: pass video=False)" if missing == ["motion_module.pth"] else ""
        raise WeightsError(f"{folder}: missing {', '.join(missing)}{hint}. The folder {where}; a Moore-AnimateAnyone "
                           f"folder holds {', '.join(FILES)}, see {WEIGHTS_README}")
    stage1 = replace(cfg, motion=None)

    def read(name: str) -> StateDict:
        return read_state_dict(folder / name, dtype=dtype)

    motion, motion_state = None, {}
    if video:
        heads = cfg.motion.num_heads if cfg.motion else None
        path = folder / FILES[3]
        motion_state, motion, _ = motion_modules_from_state(read_motion_file(path, dtype), str(path), stage1, heads)
    unet_state, source = read(FILES[0]), str(folder / FILES[0])
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in UNet(stage1).state_dict().items()}
    check_keys(shapes, unet_state, source, "Moore denoising_unet.pth (SD 1.5 UNet, diffusers names)")
    unet = build_and_load(lambda: UNet(replace(cfg, motion=motion)), {**unet_state, **motion_state}, source,
                          "Moore denoising_unet.pth + motion_module.pth", device=device)
    reference = build_and_load(lambda: ReferenceNet(stage1), read(FILES[1]), str(folder / FILES[1]),
                               "Moore reference_unet.pth (SD 1.5 UNet without conv_norm_out/conv_out)",
                               device=device)
    pose_state = read(FILES[2])
    pose_cfg = pose_guider_config(pose_state, str(folder / FILES[2]), cfg)
    guider = build_and_load(lambda: PoseGuider(pose_cfg), pose_state, str(folder / FILES[2]),
                            f"Pose Guider {'/'.join(map(str, pose_cfg.channels))} -> {pose_cfg.out_channels}",
                            device=device)
    return MooreWeights(unet, reference, guider, motion)
