"""Which networks a stage starts from and which of their parameters train (paper 3.3)."""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from aa.models import config
from aa.models.bundle import Models
from aa.models.reference import reference_state
from aa.models.unet import UNet
from aa.training.config import TrainConfig
from aa.weights.animate import insert_motion_modules
from aa.weights.clip import load_clip
from aa.weights.controlnet import controlnet_pose_guider_state
from aa.weights.native import load_models
from aa.weights.sd import load_vae, unet_state_dict, vae_config_beside


def stage1_models(cfg: TrainConfig) -> Models:
    """Stage 1 networks: a native folder (`init`), or a preset's networks initialised from public weights where given
    (SD UNet for both UNets, VAE, CLIP, ControlNet for the Pose Guider); no temporal layers."""
    if cfg.init:
        models, _ = load_models(cfg.init, dtype=torch.float32)  # fp32 master weights, whatever the file holds
    else:
        if cfg.model not in config.ARCHITECTURES:
            raise ValueError(f"unknown model preset {cfg.model!r}: expected one of {sorted(config.ARCHITECTURES)}")
        models = Models.build(config.ARCHITECTURES[cfg.model]())
    models.unet = _without_motion(models)
    if cfg.sd_unet:
        state, _, _ = unet_state_dict(cfg.sd_unet, models.unet.cfg)
        models.unet.load_state_dict(state)
        models.reference_net.load_state_dict(reference_state(state))
    if cfg.vae:
        models.vae = load_vae(cfg.vae, vae_config_beside(cfg.vae, models.vae.cfg), dtype=torch.float32)
    if cfg.clip:
        models.image_encoder = load_clip(cfg.clip, dtype=torch.float32)
    if cfg.pose_guider_init:
        models.pose_guider.load_state_dict(controlnet_pose_guider_state(cfg.pose_guider_init))
    models.cfg = replace(models.cfg, unet=models.unet.cfg, vae=models.vae.cfg, clip=models.image_encoder.cfg)
    return models


def _without_motion(models: Models) -> UNet:
    """A stage-1 UNet: the same parameters with the temporal layers (if any) left out."""
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
    elif cfg.stage == 2:
        if not cfg.stage1:
            raise ValueError("stage 2 starts from a stage-1 checkpoint: pass --stage1 DIR")
        models, _ = load_models(cfg.stage1, dtype=torch.float32)
        # the preset's temporal layers (AnimateDiff files don't store the number of heads: the preset gives it)
        motion = config.ARCHITECTURES.get(cfg.model, config.sd15)().unet.motion or config.animatediff("v2")
        if cfg.motion:
            insert_motion_modules(models.unet, cfg.motion, num_heads=motion.num_heads)
        elif models.unet.cfg.motion is None:  # new temporal layers, zero-initialised (identity at the start)
            models.unet.add_motion_modules(motion)
        models.cfg = replace(models.cfg, unet=models.unet.cfg)
    else:
        raise ValueError(f"--stage must be 1 or 2, got {cfg.stage}")
    return models, set_trainable(models, cfg.stage, cfg.reference, cfg.train_image_encoder)


def set_trainable(models: Models, stage: int, reference: bool = True,
                  train_image_encoder: bool = False) -> tuple[str, ...]:
    """Set requires_grad for a stage (paper 3.3) and return the names of the networks that train.

    Stage 1: the UNet, the Pose Guider and the ReferenceNet (without its unused tail; not at all with
    reference=False); stage 2: only the UNet's temporal layers. The VAE and the image encoder stay frozen."""
    if stage == 1:
        trainable = ("unet", "pose_guider") + (("reference_net",) if reference else ()) + \
            (("image_encoder",) if train_image_encoder else ())
    else:
        trainable = ("unet",)
    for name, module in models.modules().items():
        module.requires_grad_(name in trainable)
    if stage == 1:
        assert models.unet.cfg.motion is None, "stage 1 trains a UNet without temporal layers"
        frozen = single_token_query_parameters(models.unet)
        if reference:  # the ReferenceNet's unused tail: nothing reads it
            frozen += models.reference_net.unused_parameters() + single_token_query_parameters(models.reference_net)
        for p in frozen:
            p.requires_grad_(False)
    else:
        assert models.unet.cfg.motion is not None, "stage 2 trains temporal layers: the UNet has none"
        for name, p in models.unet.named_parameters():
            p.requires_grad_(".motion_modules." in name)
    return trainable


def single_token_query_parameters(unet: UNet) -> list[nn.Parameter]:
    """The cross-attention parameters that can't change the output when the context is one token (the CLIP image
    embedding): softmax over a single key is 1, so attn2 returns to_out(to_v(context)) whatever its queries
    and keys. norm2, attn2.to_q and attn2.to_k get only rounding noise as gradient, which AdamW would turn into
    lr-sized random steps; training leaves them as loaded (the released weights train them, to no effect)."""
    params = []
    for transformer in unet.transformers():
        block = transformer.transformer_blocks[0]
        params += [*block.norm2.parameters(), *block.attn2.to_q.parameters(), *block.attn2.to_k.parameters()]
    return params


def cast_frozen(models: Models, dtype: torch.dtype) -> int:
    """Store the parameters that don't train in `dtype` (bf16/fp16 halves their memory; under autocast the matmuls
    and convolutions read them in that precision anyway). Returns the number of bytes saved."""
    saved = 0
    for module in models.modules().values():
        for p in module.parameters():
            if not p.requires_grad and p.is_floating_point() and p.dtype != dtype:
                saved += p.nbytes - p.nbytes * dtype.itemsize // p.element_size()
                p.data = p.data.to(dtype)
    return saved
