"""Pose Guider (paper 3.2): a light conv net from the pose image to the latent resolution.

Released variant (Moore): conv_in 3->16, then per stage a conv and a stride-2 conv (16/32/96/256), SiLU after every
conv but the last, no norms, conv_out to 320 channels added after the denoising UNet's conv_in; pose input is RGB in
[0, 1]. novita-ai uses 16/32/64/128. The paper's variant outputs the latent's 4 channels, added to the noisy latent.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from aa.models.config import PoseGuiderConfig


class PoseGuider(nn.Module):
    """Pose image (b f) 3 H W in [0, 1] -> (b f) out H/8 W/8 (8 = 2 ** number of stages)."""

    def __init__(self, cfg: PoseGuiderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        blocks = []
        for a, b in zip(ch[:-1], ch[1:]):
            blocks += [nn.Conv2d(a, a, 3, padding=1), nn.Conv2d(a, b, 3, padding=1, stride=2)]
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(ch[-1], cfg.out_channels, 3, padding=1)
        self.reset_parameters()

    @property
    def adds_to_latent(self) -> bool:
        """True for the paper's variant (added to the noisy latent), False for the released one (after conv_in)."""
        return self.cfg.adds_to == "latent"

    def reset_parameters(self) -> None:
        """Gaussian init (He-scaled, so SiLU activations keep their size through 7 convs), zero final projection:
        a new guider adds nothing, and training starts from the unconditioned UNet (paper 3.2)."""
        for conv in [self.conv_in, *self.blocks]:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, pose: Tensor) -> Tensor:
        assert pose.ndim == 4 and pose.shape[1] == self.cfg.in_channels, \
            f"expected (b f) {self.cfg.in_channels} H W pose images, got {tuple(pose.shape)}"
        x = F.silu(self.conv_in(pose))
        for conv in self.blocks:
            x = F.silu(conv(x))
        return self.conv_out(x)
