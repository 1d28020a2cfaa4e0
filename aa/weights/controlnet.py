"""The Pose Guider's initialisation from ControlNet's condition encoder (lllyasviel/control_v11p_sd15_openpose).

ControlNet's `controlnet_cond_embedding` (diffusers) / `input_hint_block` (original .pth) is the released Pose
Guider's exact structure: conv_in 3->16, six convs 16/32/96/256, conv_out to 320.
"""
from __future__ import annotations

import os
import re

import torch

from aa.weights.files import StateDict, WeightsError, read_state_dict
from aa.weights.sd import resolve

# (pattern, replacement): each ControlNet naming onto ours
RULES = [
    (r"^controlnet_cond_embedding\.", ""),  # diffusers: same names below this prefix
    (r"^(?:control_model\.)?input_hint_block\.0\.", "conv_in."),  # original: Sequential(conv, SiLU, conv, ...)
    (r"^(?:control_model\.)?input_hint_block\.14\.", "conv_out."),  # the last conv (index 14)
]


def _rename(key: str) -> str | None:
    for pattern, repl in RULES:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    m = re.match(r"^(?:control_model\.)?input_hint_block\.(\d+)\.(weight|bias)$", key)
    if m:  # convs at even indices 2..12 are blocks 0..5 (odd indices are the parameter-free SiLUs)
        return f"blocks.{int(m[1]) // 2 - 1}.{m[2]}"
    return None


def controlnet_pose_guider_state(path: str | os.PathLike, dtype: torch.dtype | None = None) -> StateDict:
    """The condition encoder's tensors of a ControlNet file or folder, in the Pose Guider's names."""
    file = resolve(path, "controlnet")
    keep = lambda k: _rename(k) is not None  # noqa: E731
    state = {_rename(k): v for k, v in read_state_dict(file, keep=keep, dtype=dtype).items()}
    if "conv_in.weight" not in state:
        raise WeightsError(f"{file}: no ControlNet condition encoder (controlnet_cond_embedding.* or "
                           f"input_hint_block.*) in this file")
    return state
