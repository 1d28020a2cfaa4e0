"""The ReferenceNet (paper 3.2): an SD UNet that encodes the reference image's latent into per-block features.

It runs once per video, at timestep 0 on the clean latent with the same CLIP context as the denoising UNet, and
returns the input of every transformer block's self-attention (`norm1` output), in block order. The denoising UNet
projects those to keys/values once (`UNet.reference_kv`) and attends to them in every frame and step.
"""
from __future__ import annotations

from dataclasses import replace

from torch import Tensor, nn

from .config import UNetConfig
from .unet import UNet


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
        """Parameters after the last feature (its block's attention, feed-forward and proj_out): nothing reads
        them, so training freezes them (and DDP needs no unused-parameter search)."""
        last = self.transformers()[-1]
        block = last.transformer_blocks[0]
        used = set(map(id, block.norm1.parameters()))
        return [p for p in [*block.parameters(), *last.proj_out.parameters()] if id(p) not in used]
