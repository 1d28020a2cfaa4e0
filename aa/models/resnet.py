"""Timestep embedding, the ResNet block, and down/upsampling (diffusers names), shared by the UNet and the VAE."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding (b,) -> (b, dim), cos first (diffusers `flip_sin_to_cos=True`, freq shift 0)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    """Linear -> SiLU -> Linear on the sinusoidal embedding (`time_embedding.linear_1/2`)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


def group_norm_over_frames(norm: nn.GroupNorm, x: Tensor, num_frames: int) -> Tensor:
    """GroupNorm with statistics pooled over the frames of each video, as AnimateDiff v1 was trained."""
    x5 = rearrange(x, "(b f) c h w -> b c f h w", f=num_frames)
    x5 = F.group_norm(x5, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return rearrange(x5, "b c f h w -> (b f) c h w")


class ResnetBlock2D(nn.Module):
    """GroupNorm-SiLU-conv twice, with the timestep added in between and a 1x1 shortcut when widths differ.

    GroupNorm eps: 1e-5 in the UNet, 1e-6 in the VAE, as in SD. `pool_frames` makes both norms pool over frames
    (AnimateDiff v1); it is a flag, not a parameter, so checkpoints are unaffected.
    """

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int | None, groups: int = 32, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_dim, out_ch) if temb_dim else None
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=eps)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None
        self.pool_frames = False

    def norm(self, norm: nn.GroupNorm, x: Tensor, num_frames: int) -> Tensor:
        if self.pool_frames and num_frames > 1:
            return group_norm_over_frames(norm, x, num_frames)
        return norm(x)

    def forward(self, x: Tensor, temb: Tensor | None = None, num_frames: int = 1) -> Tensor:
        # x: (b f) c h w; temb: (b f) c_t
        h = self.conv1(F.silu(self.norm(self.norm1, x, num_frames)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm(self.norm2, h, num_frames)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Downsample2D(nn.Module):
    """Stride-2 3x3 conv. The UNet pads 1 on every side; the VAE pads (0, 1, 0, 1) and convolves unpadded."""

    def __init__(self, channels: int, asymmetric_pad: bool = False) -> None:
        super().__init__()
        self.asymmetric_pad = asymmetric_pad
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0 if asymmetric_pad else 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.asymmetric_pad:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
