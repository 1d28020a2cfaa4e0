"""Model configurations as dataclasses, with presets for the public checkpoints and tiny test models."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class MotionConfig:
    """AnimateDiff motion modules (temporal layers). Keys follow the original AnimateDiff files."""

    num_heads: int = 8
    num_blocks: int = 2  # attention blocks per temporal transformer ("Temporal_Self", "Temporal_Self")
    max_len: int = 32  # positional table stored in the file: 24 (v1) or 32 (v2, v3, Moore); longer windows extend it
    mid_block: bool = True  # v2 and Moore have a module in the mid block; v1 and v3 do not
    pooled_resnet_norm: bool = False  # AnimateDiff v1 was trained with ResNet GroupNorms pooled over frames


@dataclass(frozen=True)
class UNetConfig:
    """The SD 1.x UNet (diffusers `UNet2DConditionModel` layout); `motion` adds the temporal layers."""

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    attention_levels: tuple[bool, ...] = (True, True, True, False)  # down levels with transformers; up levels mirror
    layers_per_block: int = 2
    # diffusers' `attention_head_dim: 8` for SD 1.x is in fact the number of heads; a tuple gives one per level
    # (down level i and the up level mirroring it; the mid block takes the last level's)
    num_heads: int | tuple[int, ...] = 8
    context_dim: int = 768  # CLIP embedding width (text in SD, image_embeds in Animate Anyone)
    norm_groups: int = 32
    motion: MotionConfig | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.num_heads, int) and len(self.num_heads) != len(self.block_out_channels):
            raise ValueError(f"num_heads needs one count per level ({len(self.block_out_channels)}), "
                             f"got {self.num_heads}")

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]

    def heads(self, level: int) -> int:
        """The attention heads of the transformers at down level `level` (and of the up level mirroring it)."""
        return self.num_heads if isinstance(self.num_heads, int) else self.num_heads[level]


@dataclass(frozen=True)
class VAEConfig:
    """The SD AutoencoderKL (diffusers layout)."""

    in_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_groups: int = 32
    scaling_factor: float = 0.18215
    # The decoder's own widths and ResNets per level, when they differ from the encoder's (None: the encoder's, as
    # in SD). A wider decoder on the same encoder keeps the latent space (tools/train_vae.py --decoder-channels).
    decoder_block_out_channels: tuple[int, ...] | None = None
    decoder_layers_per_block: int | None = None

    def __post_init__(self) -> None:
        if len(self.decoder_channels) != len(self.block_out_channels):
            raise ValueError(f"the decoder needs as many levels as the encoder ({len(self.block_out_channels)}, "
                             f"the same upsampling), got decoder_block_out_channels={self.decoder_channels}")

    @property
    def decoder_channels(self) -> tuple[int, ...]:
        """The decoder's widths, listed from the top level down like `block_out_channels`."""
        return self.decoder_block_out_channels or self.block_out_channels

    @property
    def decoder_layers(self) -> int:
        """ResNets per decoder level, minus one (the decoder has layers_per_block + 1, as in SD)."""
        return self.layers_per_block if self.decoder_layers_per_block is None else self.decoder_layers_per_block


@dataclass(frozen=True)
class CLIPVisionConfig:
    """CLIP ViT image tower + projection (transformers `CLIPVisionModelWithProjection`), ViT-L/14 by default."""

    image_size: int = 224
    patch_size: int = 14
    width: int = 1024
    layers: int = 24
    heads: int = 16
    mlp_dim: int = 4096
    projection_dim: int = 768

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1  # patches + class token


@dataclass(frozen=True)
class PoseGuiderConfig:
    """Pose Guider: a small conv net from the pose image to the latent resolution (paper 3.2).

    `channels[0]` is conv_in's width; each next width is a stage (conv, then a stride-2 conv to the new width), so
    the output is 2**(len(channels) - 1) times smaller: 8x, the VAE's factor. `out_channels` is 320 for the released
    weights (added after the UNet's conv_in) or the latent's 4 for the paper's variant (added to the noisy latent).
    Paper: 4x4 kernels, stride 2; the released weights use 3x3 kernels, and we follow the weights for both variants.
    """

    in_channels: int = 3
    channels: tuple[int, ...] = (16, 32, 96, 256)
    out_channels: int = 320
    adds_to: str = "conv_in"  # "conv_in": added after the UNet's conv_in (released); "latent": to the noisy latent


@dataclass(frozen=True)
class ModelConfig:
    """Everything Animate Anyone needs: the two UNets share `unet` (the ReferenceNet has no temporal layers)."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    clip: CLIPVisionConfig = field(default_factory=CLIPVisionConfig)
    pose_guider: PoseGuiderConfig = field(default_factory=PoseGuiderConfig)


def sd15_unet(motion: MotionConfig | None = None) -> UNetConfig:
    return UNetConfig(motion=motion)


def animatediff(version: str) -> MotionConfig:
    """Motion-module presets: 'v1' (mm_sd_v15), 'v2' (mm_sd_v15_v2, Moore), 'v3' (v3_sd15_mm)."""
    presets = {
        "v1": MotionConfig(max_len=24, mid_block=False, pooled_resnet_norm=True),
        "v2": MotionConfig(max_len=32, mid_block=True),
        "v3": MotionConfig(max_len=32, mid_block=False),
    }
    if version not in presets:
        raise ValueError(f"unknown AnimateDiff version {version!r}: expected one of {sorted(presets)}")
    return presets[version]


def sd15() -> ModelConfig:
    """Moore-AnimateAnyone's released weights: SD 1.5 UNets, AnimateDiff v2 motion modules, 16/32/96/256 guider."""
    return ModelConfig(unet=UNetConfig(motion=animatediff("v2")))


def novita() -> ModelConfig:
    """novita-ai's retrain of the same code: only the Pose Guider widths differ (16/32/64/128)."""
    return replace(sd15(), pose_guider=PoseGuiderConfig(channels=(16, 32, 64, 128)))


def paper_pose_guider(latent_channels: int = 4) -> PoseGuiderConfig:
    """The paper's Pose Guider: 16/32/64/128 channels, output added to the noisy latent (paper 3.2)."""
    return PoseGuiderConfig(channels=(16, 32, 64, 128), out_channels=latent_channels, adds_to="latent")


def demo() -> ModelConfig:
    """The bundled demo model: the full architecture at a width that trains on a 2-core CPU, for 96x96 synthetic
    characters (the README gives the recipe). Deviation from SD: a 3-level VAE (4x smaller latents, 8 channels), which
    a short CPU run trains to a sharp reconstruction where the 8x one stays blurry, and a 4-level UNet whose
    full-resolution level has no attention, so a step costs about what 12x12 latents would. The bundled folder
    itself has 16 latent channels since round 6 (tools/widen_latent.py; its config.json records the architecture),
    while this preset stays what rounds 1-5 were trained from."""
    return ModelConfig(
        unet=UNetConfig(in_channels=8, out_channels=8, block_out_channels=(32, 64, 96, 128),
                        attention_levels=(False, True, True, False), layers_per_block=1, num_heads=4,
                        context_dim=64, norm_groups=8, motion=MotionConfig(num_heads=4, max_len=32, mid_block=True)),
        vae=VAEConfig(latent_channels=8, block_out_channels=(32, 64, 64), layers_per_block=1, norm_groups=8,
                      scaling_factor=1.0),  # tools/train_vae.py measured latent std 0.989: no rescaling needed
        clip=CLIPVisionConfig(image_size=64, patch_size=8, width=96, layers=3, heads=4, mlp_dim=192,
                              projection_dim=64),
        pose_guider=PoseGuiderConfig(channels=(16, 32, 64), out_channels=32),
    )


def tiny() -> ModelConfig:
    """A model with the full architecture at toy width: runs in milliseconds on CPU (tests)."""
    return ModelConfig(
        unet=UNetConfig(block_out_channels=(32, 64), attention_levels=(True, False), layers_per_block=1,
                        num_heads=2, context_dim=16, norm_groups=8,
                        motion=MotionConfig(num_heads=2, max_len=24, mid_block=True)),
        vae=VAEConfig(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_groups=4),
        clip=CLIPVisionConfig(image_size=28, patch_size=14, width=32, layers=2, heads=2, mlp_dim=64,
                              projection_dim=16),
        pose_guider=PoseGuiderConfig(channels=(8, 8, 16, 16), out_channels=32),
    )


# The architectures a name on the command line can choose (sample.py --model, train.py --model, the tools).
ARCHITECTURES = {"sd15": sd15, "demo": demo, "tiny": tiny}


def to_dict(cfg: ModelConfig) -> dict:
    """A JSON-ready dict of a model configuration (saved beside checkpoints)."""
    return asdict(cfg)


def build(cls, fields: dict):
    """One config dataclass from its JSON fields (lists become tuples); unknown fields raise a TypeError."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def from_dict(d: dict) -> ModelConfig:
    """Inverse of `to_dict`; unknown or missing fields raise a TypeError naming them."""
    unet = dict(d["unet"])
    motion = unet.pop("motion", None)
    return ModelConfig(
        unet=replace(build(UNetConfig, unet), motion=build(MotionConfig, motion) if motion else None),
        vae=build(VAEConfig, d["vae"]), clip=build(CLIPVisionConfig, d["clip"]),
        pose_guider=build(PoseGuiderConfig, d["pose_guider"]))
