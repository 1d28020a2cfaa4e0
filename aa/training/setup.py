"""Which networks a stage starts from and which of their parameters train (paper 3.3)."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from .. import config
from ..models import Models
from ..weights.animate import insert_motion_modules
from ..weights.clip import load_clip
from ..weights.controlnet import controlnet_pose_guider_state
from ..weights.native import load_models
from ..weights.sd import load_vae, unet_state_dict

if TYPE_CHECKING:
    from .loop import TrainConfig

PRESETS = {"sd15": config.moore, "tiny": config.tiny}


def stage1_models(cfg: TrainConfig) -> Models:
    """Stage 1 networks: a native folder (`init`), or a preset's networks initialised from public weights where given
    (SD UNet for both UNets, VAE, CLIP, ControlNet for the Pose Guider); no temporal layers."""
    if cfg.init:
        models, _ = load_models(cfg.init)
    else:
        if cfg.model not in PRESETS:
            raise ValueError(f"unknown model preset {cfg.model!r}: expected one of {sorted(PRESETS)}")
        models = Models.build(PRESETS[cfg.model]())
    models.unet = _without_motion(models)
    if cfg.sd_unet:
        state, _, _ = unet_state_dict(cfg.sd_unet, models.unet.cfg)
        models.unet.load_state_dict(state)
        models.reference_net.load_state_dict({k: v for k, v in state.items() if not k.startswith("conv_")
                                              or k.startswith("conv_in.")})
    if cfg.vae:
        models.vae = load_vae(cfg.vae, models.vae.cfg)
    if cfg.clip:
        models.image_encoder = load_clip(cfg.clip)
    if cfg.pose_guider_init:
        models.pose_guider.load_state_dict(controlnet_pose_guider_state(cfg.pose_guider_init))
    models.cfg = replace(models.cfg, unet=models.unet.cfg, vae=models.vae.cfg, clip=models.image_encoder.cfg)
    return models


def _without_motion(models: Models):
    """A stage-1 UNet: the same parameters with the temporal layers (if any) left out."""
    from ..unet import UNet
    unet = models.unet
    if unet.cfg.motion is None:
        return unet
    plain = UNet(replace(unet.cfg, motion=None))
    plain.load_state_dict({k: v for k, v in unet.state_dict().items() if ".motion_modules." not in k})
    return plain


def build_models(cfg: TrainConfig) -> tuple[Models, tuple[str, ...]]:
    """The networks of a stage, with requires_grad set; returns them and the names of those that train."""
    if cfg.stage == 1:
        models = stage1_models(cfg)
        trainable = ("unet", "pose_guider") + (("reference_net",) if cfg.reference else ()) + \
            (("image_encoder",) if cfg.train_image_encoder else ())
    elif cfg.stage == 2:
        if not cfg.stage1:
            raise ValueError("stage 2 starts from a stage-1 checkpoint: pass --stage1 DIR")
        models, _ = load_models(cfg.stage1)
        if cfg.motion:
            insert_motion_modules(models.unet, cfg.motion)
        elif models.unet.cfg.motion is None:  # new temporal layers, zero-initialised (identity at the start)
            models.unet.add_motion_modules(PRESETS.get(cfg.model, config.moore)().unet.motion or config.animatediff("v2"))
        models.cfg = replace(models.cfg, unet=models.unet.cfg)
        trainable = ("unet",)
    else:
        raise ValueError(f"--stage must be 1 or 2, got {cfg.stage}")
    for name, module in models.modules().items():
        module.requires_grad_(name in trainable)
    if cfg.stage == 1 and cfg.reference:
        for p in models.reference_net.unused_parameters():  # nothing reads them: they'd get no gradient
            p.requires_grad_(False)
    else:
        for name, p in models.unet.named_parameters():
            p.requires_grad_(".motion_modules." in name)
    return models, trainable
