"""The SD 1.x UNet, with Animate Anyone's reference attention and optional AnimateDiff temporal layers.

Attribute names are diffusers' (`UNet2DConditionModel`) plus AnimateDiff's `motion_modules`, so diffusers-format SD
files, Moore's `denoising_unet.pth` and AnimateDiff's motion modules all load strictly. Frames are folded into the
batch, `(b f) c h w`; only the temporal layers unfold them. Each level's layers run as
resnet -> transformer (if any) -> temporal layer (if any), which is where AnimateDiff inserts them.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from aa.models.attention import KV, Transformer2D
from aa.models.config import MotionConfig, UNetConfig
from aa.models.resnet import (
    Downsample2D,
    ResnetBlock2D,
    TimestepEmbedding,
    Upsample2D,
    group_norm_over_frames,
    timestep_embedding,
)
from aa.models.temporal import MotionModule


class Level(nn.Module):
    """One down, mid or up level: `resnets`, matching `attentions` and `motion_modules` (or none), a resampler."""

    def __init__(self, in_chs: list[int], out_ch: int, cfg: UNetConfig, attentions: int, heads: int,
                 resample: str | None = None) -> None:
        super().__init__()
        g = cfg.norm_groups
        self.resnets = nn.ModuleList([ResnetBlock2D(c, out_ch, cfg.time_embed_dim, g) for c in in_chs])
        self.attentions = nn.ModuleList(
            [Transformer2D(out_ch, heads, cfg.context_dim, g) for _ in range(attentions)])
        self.motion_modules = nn.ModuleList()
        if resample == "down":
            self.downsamplers = nn.ModuleList([Downsample2D(out_ch)])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Upsample2D(out_ch)])

    def add_motion_modules(self, cfg: MotionConfig, groups: int, count: int | None = None) -> None:
        width = self.resnets[0].conv2.out_channels
        self.motion_modules = nn.ModuleList(
            [MotionModule(width, cfg, groups) for _ in range(len(self.resnets) if count is None else count)])


class UNet(nn.Module):
    """Denoising UNet eps_theta(z_t, t, c) with optional reference features, pose features and temporal layers."""

    def __init__(self, cfg: UNetConfig, head: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        ch, n, g = cfg.block_out_channels, cfg.layers_per_block, cfg.norm_groups
        levels = len(ch)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], cfg.time_embed_dim)

        self.down_blocks = nn.ModuleList()
        for i in range(levels):
            ins = [ch[max(i - 1, 0)]] + [ch[i]] * (n - 1)
            self.down_blocks.append(Level(ins, ch[i], cfg, n * cfg.attention_levels[i], cfg.heads(i),
                                          "down" if i < levels - 1 else None))
        # resnet, transformer, resnet
        self.mid_block = Level([ch[-1], ch[-1]], ch[-1], cfg, attentions=1, heads=cfg.heads(levels - 1))

        # up level i mirrors down level (levels - 1 - i): n + 1 resnets, each eating one skip connection
        self.up_blocks = nn.ModuleList()
        skips = [ch[0]] + [c for i, c in enumerate(ch) for _ in range(n + (i < levels - 1))]
        prev = ch[-1]
        for i, out in enumerate(reversed(ch)):
            ins = []
            for _ in range(n + 1):
                ins.append(prev + skips.pop())
                prev = out
            mirror = levels - 1 - i
            self.up_blocks.append(Level(ins, out, cfg, (n + 1) * cfg.attention_levels[mirror], cfg.heads(mirror),
                                        "up" if i < levels - 1 else None))
        if head:
            self.conv_norm_out = nn.GroupNorm(g, ch[0], eps=1e-5)
            self.conv_out = nn.Conv2d(ch[0], cfg.out_channels, 3, padding=1)
        self.gradient_checkpointing = False
        if cfg.motion is not None:
            self.add_motion_modules(cfg.motion)

    def add_motion_modules(self, motion: MotionConfig) -> None:
        """Insert zero-initialised temporal layers (training stage 2); existing parameters are untouched."""
        g = self.cfg.norm_groups
        for level in [*self.down_blocks, *self.up_blocks]:
            level.add_motion_modules(motion, g)
        if motion.mid_block:
            self.mid_block.add_motion_modules(motion, g, count=1)
        else:  # v1/v3 replacing v2 modules: no stale mid-block module left behind
            self.mid_block.motion_modules = nn.ModuleList()
        for module in self.modules():
            if isinstance(module, ResnetBlock2D):
                module.pool_frames = motion.pooled_resnet_norm
        self.cfg = replace(self.cfg, motion=motion)

    def transformers(self) -> list[Transformer2D]:
        """The spatial transformers in execution order: the order of reference features and cached K/V."""
        return [t for level in [*self.down_blocks, self.mid_block, *self.up_blocks] for t in level.attentions]

    def last_up_transformer(self) -> tuple[int, int] | None:
        """(up level, layer) of the last spatial transformer to run (None if the up levels have none)."""
        places = [(j, i) for j, level in enumerate(self.up_blocks) for i in range(len(level.attentions))]
        return places[-1] if places else None

    def reference_kv(self, features: list[Tensor]) -> list[KV]:
        """Project the ReferenceNet's features (b, m, c) once per video with each block's own attn1 to_k/to_v."""
        blocks = self.transformers()
        assert len(features) == len(blocks), f"{len(features)} reference features for {len(blocks)} blocks"
        return [t.transformer_blocks[0].attn1.project_kv(x) for t, x in zip(blocks, features)]

    def embed(self, timestep: Tensor | float, context: Tensor, batch: int, num_frames: int) -> tuple[Tensor, Tensor]:
        """Timestep embedding and CLIP context for every frame: (b f) c_t and (b f) m c_ctx."""
        assert context.ndim == 3 and context.shape[0] * num_frames == batch, \
            f"context must be (b, m, c) for {batch // num_frames} videos, got {tuple(context.shape)}"
        device = context.device
        t = torch.as_tensor(timestep, device=device).reshape(-1).expand(batch // num_frames)
        temb = self.time_embedding(timestep_embedding(t, self.cfg.block_out_channels[0]).to(context.dtype))
        return temb.repeat_interleave(num_frames, 0), context.repeat_interleave(num_frames, 0)

    def _run(self, module: nn.Module, *args) -> Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def _layer(self, level: Level, i: int, h: Tensor, temb: Tensor, context: Tensor, refs: Iterator[KV | None],
               num_frames: int, features: list[Tensor] | None) -> Tensor:
        """resnet i of a level, then its transformer and temporal layer if the level has them."""
        h = self._run(level.resnets[i], h, temb, num_frames)
        if level.attentions:
            h, feature = self._run(level.attentions[i], h, context, next(refs), num_frames)
            if features is not None:
                features.append(feature)
        if level.motion_modules:
            h = self._run(level.motion_modules[i], h, num_frames)
        return h

    def trunk(self, h: Tensor, temb: Tensor, context: Tensor, ref_kv: list[KV] | None, num_frames: int,
              features: list[Tensor] | None = None, features_only: bool = False) -> Tensor | None:
        """Down, mid and up levels with skip connections, (b f) c0 h w -> (b f) c0 h w.

        `features` collects each transformer block's attn1 input. With `features_only`, stop once the last one is
        taken: nothing after it contributes to the features (the ReferenceNet).
        """
        refs = iter(ref_kv) if ref_kv is not None else itertools.repeat(None)
        stop = self.last_up_transformer() if features_only else None  # (up level, layer) where features end
        skips = [h]
        for level in self.down_blocks:
            for i in range(len(level.resnets)):
                h = self._layer(level, i, h, temb, context, refs, num_frames, features)
                skips.append(h)
            if hasattr(level, "downsamplers"):
                h = level.downsamplers[0](h)
                skips.append(h)
        mid = self.mid_block
        h = self._run(mid.resnets[0], h, temb, num_frames)
        if features_only and stop is None:  # the mid block holds the last transformer
            features.append(mid.attentions[0].reference_features(h))
            return None
        h, feature = self._run(mid.attentions[0], h, context, next(refs), num_frames)
        if features is not None:
            features.append(feature)
        if mid.motion_modules:
            h = self._run(mid.motion_modules[0], h, num_frames)
        h = self._run(mid.resnets[1], h, temb, num_frames)
        for j, level in enumerate(self.up_blocks):
            for i in range(len(level.resnets)):
                h = torch.cat([h, skips.pop()], dim=1)
                if (j, i) == stop:
                    # the last transformer: only its attn1 input is needed
                    features.append(level.attentions[i].reference_features(level.resnets[i](h, temb, num_frames)))
                    return None
                h = self._layer(level, i, h, temb, context, refs, num_frames, features)
            if hasattr(level, "upsamplers"):
                h = level.upsamplers[0](h)
        return h

    def forward(self, sample: Tensor, timestep: Tensor | float, context: Tensor, *, ref_kv: list[KV] | None = None,
                pose_features: Tensor | None = None, num_frames: int = 1) -> Tensor:
        """Predict the noise (or v) for noisy latents.

        sample: (b f) c h w noisy latents; timestep: one per video (b,) or a scalar; context: (b, m, c) CLIP tokens;
        ref_kv: cached reference keys/values, one (k, v) per transformer block (`reference_kv`), for the first r <= b
        videos (the rest, e.g. the unconditional branch, attend to themselves only); pose_features: (b f) c0 h w,
        the released Pose Guider's output, added after conv_in (the paper adds it to the latent instead).
        """
        assert sample.ndim == 4 and sample.shape[0] % num_frames == 0, \
            f"expected (b f) c h w with f={num_frames}, got {tuple(sample.shape)}"
        temb, context = self.embed(timestep, context, sample.shape[0], num_frames)
        h = self.conv_in(sample)
        if pose_features is not None:
            h = h + pose_features
        h = self.trunk(h, temb, context, ref_kv, num_frames)
        if self.cfg.motion is not None and self.cfg.motion.pooled_resnet_norm and num_frames > 1:
            h = group_norm_over_frames(self.conv_norm_out, h, num_frames)
        else:
            h = self.conv_norm_out(h)
        return self.conv_out(F.silu(h))

