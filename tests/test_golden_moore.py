"""`pipeline.moore_settings()` reproduces the RELEASED Moore-AnimateAnyone inference (`Pose2VideoPipeline`, commit
a914ef3).

tools/make_golden_moore.py drew a tiny random model (tests/data/golden_moore/config.json), saved it in the release
layout (denoising_unet.pth, reference_unet.pth, motion_module.pth, pose_guider.pth; fp16 values), a diffusers VAE
folder and a transformers CLIP folder, ran the released pipeline on it in fp32 (3 DDIM steps, guidance 3.5, context
windows of 4 frames overlapping by 1) and recorded its input noise and output frames. Here the public loaders read
those files and `pipeline.animate` must give the same frames to within 1/255 (ours are uint8, the release's floats
in [0, 1]). Measured: 0.58/255 at most, most of it our rounding to 8 bits; `pipeline.Settings()` (scaled_linear
betas, triangular blending, no wrapping) misses by over 100/255.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from aa.models.bundle import Models
from aa.models.config import from_dict
from aa.sampling import pipeline
from aa.sampling.load import load_for_sampling

GOLDEN = Path(__file__).parent / "data" / "golden_moore"
TOL = 1 / 255


@pytest.fixture(scope="module")
def models() -> Models:
    cfg = from_dict(json.loads((GOLDEN / "config.json").read_text()))
    loaded, _, _ = load_for_sampling(moore=GOLDEN, vae=GOLDEN / "vae", clip=GOLDEN / "image_encoder", cfg=cfg,
                                     dtype=torch.float32)
    return loaded


def max_error(models: Models, video: str, settings: pipeline.Settings) -> float:
    """Largest |ours - released| over all pixels of one golden video, in [0, 1] units."""
    file = GOLDEN / f"{video}.safetensors"
    g = load_file(str(file))
    with safe_open(str(file), framework="pt") as f:
        meta = json.loads(f.metadata()["golden"])
    settings = replace(settings, steps=meta["steps"], guidance=meta["guidance"], window=meta["window"],
                       overlap=meta["overlap"])
    frames = pipeline.animate(models, g["reference"].numpy(), g["poses"].numpy(), settings, latents=g["latents"],
                              progress=False)
    assert frames.shape == tuple(g["frames"].shape), f"{frames.shape} vs {tuple(g['frames'].shape)}"
    return float(np.abs(frames / 255.0 - g["frames"].double().numpy()).max())


def test_single_window_matches_release(models: Models) -> None:
    """4 frames in one window: the same CLIP embedding (PIL-squashed to 224), reference latent and ReferenceNet keys
    and values, guided v-prediction (zero embedding and no reference for the unconditional branch) and DDIM
    trajectory (linear betas, zero SNR, trailing) as the release, so the same frames to within 1/255."""
    assert max_error(models, "single", pipeline.moore_settings()) <= TOL


def test_wrapping_windows_match_release(models: Models) -> None:
    """10 frames in windows of 4 that start every 3 frames, the last wrapping round to frames 0-2, predictions
    averaged uniformly: the release's context schedule, so again the same frames to within 1/255."""
    assert max_error(models, "long", pipeline.moore_settings()) <= TOL
