"""The SD autoencoder (AutoencoderKL, diffusers names): image <-> latent, 8x smaller per side, 4 channels.

Latents handed to the UNet are scaled: z = 0.18215 * (posterior sample or mean), the SD 1.5 VAE's scaling factor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from aa.models.attention import Attention
from aa.models.config import VAEConfig
from aa.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D

# State-dict prefixes of what comes after the latent: a decoder-only fine-tune or swap replaces these and keeps the
# rest (the encoder and quant_conv, i.e. the latent space)
DECODER_PREFIXES = ("decoder.", "post_quant_conv.")


class VAEAttention(Attention):
    """Single-head self-attention over the h*w positions with biases, GroupNorm in front, residual."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__(channels, heads=1, qkv_bias=True)
        self.group_norm = nn.GroupNorm(groups, channels, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        # x: b c h w
        h, w = x.shape[-2:]
        t = rearrange(self.group_norm(x), "b c h w -> b (h w) c")
        # contiguous, as in Transformer2D: a channels-last view here would slow every conv after it
        return rearrange(super().forward(t), "b (h w) c -> b c h w", h=h, w=w).contiguous() + x


class MidBlock(nn.Module):
    """ResNet, attention, ResNet at the lowest resolution."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, None, groups, 1e-6) for _ in range(2)])
        self.attentions = nn.ModuleList([VAEAttention(channels, groups)])

    def forward(self, x: Tensor) -> Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Level(nn.Module):
    """ResNets then an optional resampler (`downsamplers.0` / `upsamplers.0`)."""

    def __init__(self, in_ch: int, out_ch: int, layers: int, groups: int, resample: str | None) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(in_ch if i == 0 else out_ch, out_ch, None, groups, 1e-6) for i in range(layers)])
        if resample == "down":
            self.downsamplers = nn.ModuleList([Downsample2D(out_ch, asymmetric_pad=True)])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Upsample2D(out_ch)])

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        for resample in getattr(self, "downsamplers", []) or getattr(self, "upsamplers", []):
            x = resample(x)
        return x


class Encoder(nn.Module):
    """Image (b, 3, H, W) in [-1, 1] -> Gaussian moments (b, 2 * latent, H/8, W/8)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch, g = cfg.block_out_channels, cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([
            Level(ch[max(i - 1, 0)], c, cfg.layers_per_block, g, "down" if i < len(ch) - 1 else None)
            for i, c in enumerate(ch)])
        self.mid_block = MidBlock(ch[-1], g)
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for level in self.down_blocks:
            x = level(x)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nn.Module):
    """Latent (b, latent, h, w) -> image (b, 3, 8h, 8w) in about [-1, 1]."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch, g = tuple(reversed(cfg.decoder_channels)), cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1)
        self.mid_block = MidBlock(ch[0], g)
        self.up_blocks = nn.ModuleList([
            Level(ch[max(i - 1, 0)], c, cfg.decoder_layers + 1, g, "up" if i < len(ch) - 1 else None)
            for i, c in enumerate(ch)])
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], cfg.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        x = self.mid_block(self.conv_in(z))
        for level in self.up_blocks:
            x = level(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Posterior:
    """The encoder's diagonal Gaussian q(z | x); log-variance clamped to [-30, 20] as in LDM."""

    def __init__(self, moments: Tensor) -> None:
        self.mean, logvar = moments.float().chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) per sample, summed over latent elements."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(dim=(1, 2, 3))


class AutoencoderKL(nn.Module):
    """Encoder + `quant_conv`, `post_quant_conv` + Decoder; `encode`/`decode` work in scaled latents."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(cfg.latent_channels, cfg.latent_channels, 1)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.cfg.block_out_channels) - 1)

    def posterior(self, image: Tensor) -> Posterior:
        """q(z | x) for images (b, 3, H, W) in [-1, 1], H and W multiples of `downscale`, unscaled."""
        assert image.ndim == 4 and image.shape[-1] % self.downscale == 0 and image.shape[-2] % self.downscale == 0, \
            f"expected b 3 H W with H, W multiples of {self.downscale}, got {tuple(image.shape)}"
        return Posterior(self.quant_conv(self.encoder(image)))

    def encode(self, image: Tensor, generator: torch.Generator | None = None, sample: bool = False) -> Tensor:
        """Scaled latent: the posterior mean (inference) or a sample (training)."""
        q = self.posterior(image)
        z = q.sample(generator) if sample else q.mean
        return (z * self.cfg.scaling_factor).to(image.dtype)

    def decode(self, latent: Tensor) -> Tensor:
        """Scaled latent (b, 4, h, w) -> image (b, 3, 8h, 8w), not clamped."""
        return self.decoder(self.post_quant_conv(latent / self.cfg.scaling_factor))

    def forward(self, image: Tensor) -> Tensor:
        """Reconstruction through the posterior mean."""
        return self.decode(self.encode(image))
