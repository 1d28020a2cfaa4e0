"""The five networks of Animate Anyone as one bundle (paper figure 2)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from aa.models.clip import CLIPImageEncoder
from aa.models.config import ModelConfig
from aa.models.pose_guider import PoseGuider
from aa.models.reference import ReferenceNet
from aa.models.unet import UNet
from aa.models.vae import AutoencoderKL

BUILDERS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "vae": lambda cfg: AutoencoderKL(cfg.vae),
    "image_encoder": lambda cfg: CLIPImageEncoder(cfg.clip),
    "reference_net": lambda cfg: ReferenceNet(cfg.unet),
    "unet": lambda cfg: UNet(cfg.unet),
    "pose_guider": lambda cfg: PoseGuider(cfg.pose_guider),
}
NAMES = tuple(BUILDERS)


@dataclass
class Models:
    """The five networks of Animate Anyone; `unet` has temporal layers for video."""

    vae: AutoencoderKL
    image_encoder: CLIPImageEncoder
    reference_net: ReferenceNet
    unet: UNet
    pose_guider: PoseGuider
    cfg: ModelConfig | None = None  # the configuration they were built from, when known

    def __post_init__(self) -> None:
        """The networks must fit together: latent channels and the Pose Guider's downscale match the VAE's."""
        latent = self.vae.cfg.latent_channels
        guider_scale = 2 ** (len(self.pose_guider.cfg.channels) - 1)
        if self.unet.cfg.in_channels != latent or self.unet.cfg.out_channels != latent:
            raise ValueError(f"the UNet takes {self.unet.cfg.in_channels} channels, the VAE's latents have {latent}")
        if guider_scale != self.vae.downscale:
            raise ValueError(f"the Pose Guider downsamples {guider_scale}x but the VAE {self.vae.downscale}x")

    @property
    def size_multiple(self) -> int:
        """Output width and height must be multiples of this: the VAE's downscale times the UNet's (one 2x
        downsampler per level but the last; odd latent sizes break the skip connections)."""
        return self.vae.downscale * 2 ** (len(self.unet.cfg.block_out_channels) - 1)

    @classmethod
    def build(cls, cfg: ModelConfig) -> "Models":
        """Randomly initialised networks of a configuration (tests, benchmarks, training from scratch)."""
        return cls(**{name: build(cfg) for name, build in BUILDERS.items()}, cfg=cfg)

    def modules(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in NAMES}

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Models":
        for module in self.modules().values():
            module.to(device=device, dtype=dtype)
        return self


def module_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of a network's weights: the precision it runs in (no autocast re-casting)."""
    return next(module.parameters()).dtype
