"""The ReferenceNet (paper 3.2): an SD UNet that encodes the reference image's latent into per-block features.

It runs once per video, at timestep 0 on the clean latent with the same CLIP context as the denoising UNet, and
returns the input of every transformer block's self-attention (`norm1` output), in block order. The denoising UNet
projects those to keys/values once (`UNet.reference_kv`) and attends to them in every frame and step.

Early stop: nothing after the last transformer's `norm1` contributes to the features, so the ReferenceNet never
runs it. The pieces: `UNet.last_up_transformer` names the spot, `UNet.trunk` (with `features_only`) returns right
after that block's `Transformer2D.reference_features`, and `unused_parameters` below lists exactly the parameters
skipped, which training freezes (aa/training/setup.py) and FSDP shards with `reference_features` registered as a
forward method (aa/training/parallel.py).
"""
from __future__ import annotations

from dataclasses import replace

from torch import Tensor, nn

from aa.models.config import UNetConfig
from aa.models.unet import UNet

HEAD_PREFIXES = ("conv_norm_out.", "conv_out.")  # the UNet's output head, which a ReferenceNet doesn't have


def reference_state(unet_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A ReferenceNet's state dict from an SD UNet's (the paper initialises it from SD): the same tensors without
    the output head and any temporal layers."""
    return {k: v for k, v in unet_state.items() if not k.startswith(HEAD_PREFIXES) and ".motion_modules." not in k}


class ReferenceNet(UNet):
    """The UNet's parameters without the output head (Moore's `reference_unet.pth`: 682 keys) or temporal layers."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__(replace(cfg, motion=None), head=False)

    def forward(self, latent: Tensor, context: Tensor, timestep: Tensor | float = 0) -> list[Tensor]:  # type: ignore[override]
        """latent: (b, c, h, w) scaled reference latent; context: (b, m, c_ctx). Returns one (b, n, c) per block."""
        assert latent.ndim == 4, f"expected b c h w, got {tuple(latent.shape)}"
        temb, context = self.embed(timestep, context, latent.shape[0], 1)
        features: list[Tensor] = []
        self.trunk(self.conv_in(latent), temb, context, None, 1, features, features_only=True)
        return features

    def unused_parameters(self) -> list[nn.Parameter]:
        """Parameters after the last feature: its block's attention and feed-forward, its proj_out, and every up
        layer after it. Nothing reads them, so training freezes them (and DDP needs no unused-parameter search)."""
        place = self.last_up_transformer()
        last = self.transformers()[-1]
        block = last.transformer_blocks[0]
        used = set(map(id, block.norm1.parameters()))
        unused = [p for p in [*block.parameters(), *last.proj_out.parameters()] if id(p) not in used]
        if place is None:  # the features end in the mid block: its second resnet and the up levels never run
            later = [self.mid_block.resnets[1], *self.mid_block.motion_modules, *self.up_blocks]
            return unused + [p for m in later for p in m.parameters()]
        j, i = place
        level = self.up_blocks[j]
        later = [*level.resnets[i + 1:], *level.attentions[i + 1:], *level.motion_modules[i:],
                 *getattr(level, "upsamplers", []), *self.up_blocks[j + 1:]]
        return unused + [p for m in later for p in m.parameters()]
