"""The CLIP image encoder of sd-image-variations (`image_encoder/`, transformers `CLIPVisionModelWithProjection`).

    image_encoder/config.json          transformers config: the head count (shapes can't tell it), the activation
    image_encoder/model.safetensors    392 tensors (formats/clip_vit_l14_image_encoder_hf.txt)
    image_encoder/pytorch_model.bin    the same as a pickle; older saves add `vision_model.embeddings.position_ids`

Names are ours already (`aa/models/clip.py` follows transformers): the file loads strictly with no renaming.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch

from aa.models.clip import CLIPImageEncoder
from aa.models.config import CLIPVisionConfig
from aa.weights.detect import describe
from aa.weights.files import WEIGHTS_README, StateDict, WeightsError, read_state_dict
from aa.weights.strict import build_and_load

FORMAT = "CLIP ViT image encoder (transformers CLIPVisionModelWithProjection)"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.fp16.safetensors", "pytorch_model.fp16.bin")
DROPPED = ("vision_model.embeddings.position_ids",)  # arange(257) int64, a constant buffer saved by old transformers
PREFIX = "vision_model.embeddings."


def clip_weights_file(path: str | os.PathLike) -> Path:
    """The weights file: `path` itself, or the first of WEIGHT_FILES in the folder `path` (an `image_encoder/`, or a
    diffusers folder that holds one)."""
    path = Path(path)
    if not path.is_dir():
        if not path.exists():
            raise WeightsError(f"{path} does not exist; {WEIGHTS_README} lists the files and where they go")
        return path
    folder = path / "image_encoder" if (path / "image_encoder").is_dir() else path
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    present = sorted(p.name for p in folder.iterdir())
    raise WeightsError(f"{folder}: no CLIP image encoder weights ({' or '.join(WEIGHT_FILES[:2])}); the folder "
                       f"{'holds ' + ', '.join(present[:10]) if present else 'is empty'}. Pass the image_encoder/ "
                       f"folder of sd-image-variations-diffusers or a weights file, see {WEIGHTS_README}")


def read_config_json(folder: Path) -> dict:
    """transformers' config.json beside the weights, or {} if there is none."""
    file = folder / "config.json"
    if not file.is_file():
        return {}
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{file}: not valid JSON ({e})") from None
    config = config.get("vision_config", config)  # a whole CLIPModel config nests the vision part
    act = config.get("hidden_act", "quick_gelu")
    if act != "quick_gelu":
        raise WeightsError(f"{file}: hidden_act is {act!r}; this encoder implements OpenAI CLIP's quick_gelu")
    return config


def clip_config_from_state(state: StateDict, heads: int | None = None) -> CLIPVisionConfig:
    """Sizes from the tensors' shapes (ViT-L/14 defaults for what is missing, which the strict check then reports).
    The head count is not in any shape: `heads`, else ViT-L/14's 16 for a 1024-wide file, else an error."""
    d = CLIPVisionConfig()

    def dim(key: str, axis: int, default: int) -> int:
        return state[key].shape[axis] if key in state and state[key].ndim > axis else default

    width = dim(PREFIX + "class_embedding", 0, d.width)
    patch = dim(PREFIX + "patch_embedding.weight", -1, d.patch_size)
    grid = math.isqrt(dim(PREFIX + "position_embedding.weight", 0, d.num_positions) - 1)
    layers = {int(m[1]) for k in state if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k))}
    if heads is None and width != d.width:
        raise WeightsError(f"width {width} is not ViT-L/14's {d.width} and the head count is not in the weights: "
                           "pass cfg= or put transformers' config.json (num_attention_heads) beside the file")
    heads = heads or d.heads
    if width % heads:
        raise WeightsError(f"width {width} is not divisible by {heads} heads")
    return CLIPVisionConfig(image_size=grid * patch, patch_size=patch, width=width,
                            layers=max(layers) + 1 if layers else d.layers, heads=heads,
                            mlp_dim=dim("vision_model.encoder.layers.0.mlp.fc1.weight", 0, d.mlp_dim),
                            projection_dim=dim("visual_projection.weight", 0, d.projection_dim))


def load_clip(path: str | os.PathLike, cfg: CLIPVisionConfig | None = None, dtype: torch.dtype | None = None,
              device: torch.device | str = "cpu") -> CLIPImageEncoder:
    """Load the CLIP image encoder strictly from an `image_encoder/` folder, a diffusers folder holding one, or a
    weights file (safetensors or pickle). `cfg`: the sizes, else read from the shapes and config.json."""
    file = clip_weights_file(path)
    state = read_state_dict(file, keep=lambda k: k not in DROPPED, dtype=dtype)
    if not any(k.startswith(PREFIX) for k in state):
        raise WeightsError(f"{file}: not a {FORMAT} (no {PREFIX}* tensors); it looks like "
                           f"{describe(state)}")
    if cfg is None:
        heads = read_config_json(file.parent).get("num_attention_heads")
        try:
            cfg = clip_config_from_state(state, heads)
        except WeightsError as e:
            raise WeightsError(f"{file}: {e}") from None
    model = build_and_load(lambda: CLIPImageEncoder(cfg), state, str(file), FORMAT, device=device)
    return model.eval()
