"""Reference attention at one more UNet level of a trained model: new transformer blocks that start as identities.

Animate Anyone copies the reference's appearance through the self-attention of every transformer block, each
attending to the matching ReferenceNet block's tokens. A small UNet may have transformers only at its coarser levels
(the demo's sit at 12x12 and 6x6 latent cells for a 96x96 video), where a sleeve or a trouser leg is a cell or two
wide; a transformer at the finest level lets each latent cell look up its own part in the reference.

`add_attention_level` gives a denoising UNet (or a ReferenceNet) transformers at one more level, down and up, and
keeps everything it had. A transformer adds `proj_out(...)` to its input, so with proj_out zeroed each new block
is an identity: the grown UNet computes what the old one did, the ReferenceNet's old features are unchanged, and
training (train.py --init on the folder tools/add_attention.py writes) starts from the trained model, not afresh.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from aa.models.bundle import Models
from aa.models.reference import ReferenceNet
from aa.models.unet import UNet


@torch.no_grad()
def add_attention_level(unet: UNet, level: int, heads: int | None = None) -> UNet:
    """`unet` with transformers at down level `level` and its mirrored up level, each new one an identity, with
    `heads` attention heads (default: the UNet's count at that level)."""
    levels = list(unet.cfg.attention_levels)
    if not 0 <= level < len(levels):
        raise ValueError(f"the UNet has levels 0 to {len(levels) - 1}, got {level}")
    if levels[level]:
        raise ValueError(f"level {level} already has transformers (attention levels {tuple(levels)})")
    levels[level] = True
    num_heads = [unet.cfg.heads(i) for i in range(len(levels))]
    if heads is not None:
        if heads < 1 or unet.cfg.block_out_channels[level] % heads:
            raise ValueError(f"{heads} heads don't divide level {level}'s {unet.cfg.block_out_channels[level]} "
                             "channels")
        num_heads[level] = heads
    same = all(h == num_heads[0] for h in num_heads)
    cfg = replace(unet.cfg, attention_levels=tuple(levels), num_heads=num_heads[0] if same else tuple(num_heads))
    new = (ReferenceNet(cfg) if isinstance(unet, ReferenceNet) else UNet(cfg)).to(unet.conv_in.weight.dtype)
    added = [*new.down_blocks[level].attentions, *new.up_blocks[len(levels) - 1 - level].attentions]
    for block in added:
        block.proj_out.weight.zero_()
        block.proj_out.bias.zero_()
    state = new.state_dict()
    old = unet.state_dict()
    unknown = set(old) - set(state)
    assert not unknown, f"parameters with no place in the grown UNet: {sorted(unknown)[:3]}"
    state.update(old)
    new.load_state_dict(state)
    return new


def add_attention_level_models(models: Models, level: int, heads: int | None = None) -> Models:
    """`models` with the denoising UNet and the ReferenceNet grown at `level` (add_attention_level); the other
    networks are shared, not copied."""
    unet = add_attention_level(models.unet, level, heads)
    reference_net = add_attention_level(models.reference_net, level, heads)
    cfg = None if models.cfg is None else replace(models.cfg, unet=unet.cfg)
    return Models(vae=models.vae, image_encoder=models.image_encoder, reference_net=reference_net, unet=unet,
                  pose_guider=models.pose_guider, cfg=cfg)
