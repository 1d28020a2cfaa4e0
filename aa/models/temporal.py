"""AnimateDiff motion modules: self-attention along frames at every spatial position (paper 3.2).

Names follow the original AnimateDiff checkpoints (`motion_modules.N.temporal_transformer.*`), which Moore's
`motion_module.pth` shares. The semantics are the original code's: GroupNorm per frame, the sinusoid added to the
LayerNorm output (queries, keys and values all see it), `proj_out` zero-initialised so a new module is the identity.
"""
from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn

from aa.models.attention import Attention, FeedForward, layout
from aa.models.config import MotionConfig


def sinusoid_table(length: int, dim: int) -> Tensor:
    """pe[p, 2i] = sin(p / 10000^(2i/dim)), pe[p, 2i+1] = cos(p / 10000^(2i/dim)); (length, dim)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freqs = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(position * freqs)
    pe[:, 1::2] = torch.cos(position * freqs)
    return pe


class PositionalEncoding(nn.Module):
    """The fixed sinusoid, rebuilt rather than loaded (the files' `pos_encoder.pe` is checked, then dropped)."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoid_table(max_len, dim), persistent=False)

    def reset_buffers(self, device: torch.device | str = "cpu") -> None:
        """Rebuild the table (after a meta-device build)."""
        self.pe = sinusoid_table(*self.pe.shape).to(device)

    def forward(self, x: Tensor) -> Tensor:
        # x: b f c. Windows longer than the stored table get a longer table: the sinusoid is deterministic
        f = x.shape[1]
        pe = self.pe if f <= self.pe.shape[0] else sinusoid_table(f, x.shape[2]).to(self.pe.device)
        return x + pe[:f].to(x.dtype)


class TemporalAttention(Attention):
    """Self-attention over frames, the positional encoding added to its input first."""

    def __init__(self, dim: int, heads: int, max_len: int) -> None:
        super().__init__(dim, heads)
        self.pos_encoder = PositionalEncoding(dim, max_len)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        # x: (b n) f c, the frames of each spatial position as the tokens
        return super().forward(self.pos_encoder(x))


class TemporalTransformerBlock(nn.Module):
    """Pre-LayerNorm temporal self-attention blocks, then a GEGLU feed-forward; all residual."""

    def __init__(self, dim: int, cfg: MotionConfig) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalAttention(dim, cfg.num_heads, cfg.max_len) for _ in range(cfg.num_blocks)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(cfg.num_blocks)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        # x: (b n) f c
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    """GroupNorm (per frame), Linear proj_in, temporal blocks, Linear proj_out (zero init), residual."""

    def __init__(self, channels: int, cfg: MotionConfig, groups: int = 32) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, cfg)])
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        # x: (b f) c h w. One transpose in and one out: every token-wise layer in between (norms, projections,
        # feed-forward) runs in the frames-as-tokens layout the attention needs
        h, w = x.shape[-2:]
        t = self.proj_in(rearrange(self.norm(x), "(b f) c h w -> (b h w) f c", f=num_frames))
        for block in self.transformer_blocks:
            t = block(t)
        # back in the input's layout with one copy, as in Transformer2D: a channels-last view in an NCHW network
        # would slow every conv after it (contiguous() is that copy, or nothing where rearrange already copied)
        if layout(x) == torch.channels_last:
            t = rearrange(self.proj_out(t), "(b h w) f c -> (b f) h w c", h=h, w=w).contiguous().permute(0, 3, 1, 2)
        else:
            t = rearrange(self.proj_out(t), "(b h w) f c -> (b f) c h w", h=h, w=w).contiguous()
        return t + x


class MotionModule(nn.Module):
    """One temporal layer; the wrapper exists for the checkpoints' `temporal_transformer` key level."""

    def __init__(self, channels: int, cfg: MotionConfig, groups: int = 32) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, cfg, groups)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        assert x.ndim == 4 and x.shape[0] % num_frames == 0, f"expected (b f) c h w, got {tuple(x.shape)}"
        return self.temporal_transformer(x, num_frames)
