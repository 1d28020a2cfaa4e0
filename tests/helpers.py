"""Helpers shared by tests (not tests themselves)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open

from aa.models.config import UNetConfig, VAEConfig

if TYPE_CHECKING:
    from aa.models.bundle import Models


def tiny_animation_models() -> Models:
    """`config.tiny()` models with a non-zero Pose Guider output and temporal layers (trained ones are not zero), so
    that poses and frames matter in a test's video."""
    from aa.models import config
    from aa.models.bundle import Models
    torch.manual_seed(0)
    m = Models.build(config.tiny())
    for p in m.pose_guider.conv_out.parameters():
        p.data.normal_(0, 0.1)
    for module in m.unet.modules():
        if hasattr(module, "proj_out") and isinstance(module.proj_out, torch.nn.Linear):
            module.proj_out.weight.data.normal_(0, 0.05)
    return m


def tiny_random_unets(motion: bool) -> Models:
    """`config.tiny()` models (temporal layers only with `motion`) whose UNet and ReferenceNet weights are all
    random, none zero-initialised (no identity blocks, no zero output head), so that a test comparing what two
    networks compute compares something."""
    from dataclasses import replace

    from aa.models import config
    from aa.models.bundle import Models
    torch.manual_seed(0)
    cfg = config.tiny()
    models = Models.build(cfg if motion else replace(cfg, unet=replace(cfg.unet, motion=None)))
    for p in [*models.unet.parameters(), *models.reference_net.parameters()]:
        p.data.normal_(0, 0.05)
    return models


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


def write_tiny_inputs(root: Path, size: int, ref_hw: tuple[int, int], fps: int) -> Path:
    """A command's inputs under `root`: tiny random native weights (`native/`, recorded size `size` x `size`), a
    random reference image `ref.png` of (height, width) `ref_hw` and a 3-frame random pose video `pose.mp4`."""
    import numpy as np
    from PIL import Image

    from aa.io.video import write_video
    from aa.models import config
    from aa.models.bundle import Models
    from aa.weights.native import save_models

    torch.manual_seed(0)
    save_models(Models.build(config.tiny()), root / "native", {"prediction": "v", "width": size, "height": size})
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (*ref_hw, 3), dtype=np.uint8)).save(root / "ref.png")
    write_video(root / "pose.mp4", rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8), fps=fps)
    return root

