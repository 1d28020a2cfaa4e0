"""What sample.py's weights and sampling flags load and set, past their parsing (its --jobs runs and the web app's
server use the same): the networks the weights flags name (the bundled demo model without any), the sampling
settings (the preset, then what the weights recorded, then the flags), and the check of the output size.

Importing this module imports no torch (`sample.py --help` answers at once): the functions import what they need.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from aa.models import config
from aa.sampling.choices import DTYPE_NAMES

if TYPE_CHECKING:
    import torch

    from aa.models.bundle import Models
    from aa.sampling import pipeline

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"  # the repository's weights/ folder
DEMO = WEIGHTS / "demo"  # the bundled demo model, its reference image and its poses
DEMO_REFERENCE, DEMO_POSES = DEMO / "reference.png", DEMO / "poses.json"  # --ref and --pose with the demo model


def uses_demo(args: argparse.Namespace) -> bool:
    """No weights flag given: the bundled demo model (and its reference and poses by default)."""
    return not any([args.weights, args.moore, args.unet])


def load_weights(args: argparse.Namespace, device: torch.device) -> tuple[Models, dict, tuple[int, int], torch.dtype]:
    """The networks of the weights flags (the bundled demo without any), the sampling settings their training
    recorded, their default (width, height), and the dtype they run in."""
    import torch

    from aa.sampling.load import demo_missing, load_for_sampling
    dtype = getattr(torch, DTYPE_NAMES[args.dtype or "fp16"] if device.type == "cuda" else "float32")
    if uses_demo(args) and not (DEMO / "config.json").is_file():
        raise demo_missing(DEMO)
    models, sampling, size = load_for_sampling(
        weights=DEMO if uses_demo(args) else args.weights, moore=args.moore, unet=args.unet,
        reference_unet=args.reference_unet, motion=args.motion, pose_guider=args.pose_guider, vae=args.vae,
        clip=args.clip, cfg=config.ARCHITECTURES[args.model](), dtype=dtype, device=device)
    return models, sampling, size, dtype


def check_size(width: int, height: int, multiple: int) -> None:
    """The output size is a multiple of the model's size factor (ValueError naming the flags)."""
    if width % multiple or height % multiple:
        raise ValueError(f"--width and --height must be multiples of {multiple} for this model, got {width}x{height}")


def sampling_settings(args: argparse.Namespace, sampling: dict, dtype: torch.dtype) -> pipeline.Settings:
    """The preset, then what the weights recorded (`sampling`), then the sampling flags given."""
    from aa.sampling import pipeline
    recorded = pipeline.with_overrides(pipeline.SAMPLING_PRESETS[args.preset](), **sampling)  # the weights' defaults
    return pipeline.with_overrides(
        recorded, steps=args.steps, scheduler=args.scheduler, guidance=args.guidance, window=args.window,
        overlap=args.overlap, blend=args.blend, shift_windows=args.shift_windows, dtype=dtype, offload=args.offload,
        split_guidance=args.split_guidance)
