"""Attention, the GEGLU feed-forward, the SD transformer block and `Transformer2D` (diffusers names).

The spatial attention of Animate Anyone (paper 3.2) lives here: `attn1` of every transformer block of the
denoising UNet can take the reference keys/values of the matching ReferenceNet block as extra tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

KV = tuple[Tensor, Tensor]  # keys and values, each (b, nh, m, d)
FF_CHUNK_ELEMENTS = 2**26  # inference: the feed-forward's inner activation in slices of at most this many values


class Attention(nn.Module):
    """Multi-head attention on `F.scaled_dot_product_attention`: self-attention, cross-attention, or
    self-attention with extra reference keys/values."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, qkv_bias: bool = False) -> None:
        super().__init__()
        assert dim % heads == 0, f"dim {dim} is not divisible by {heads} heads"
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=qkv_bias)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=qkv_bias)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])  # a list so the keys read `to_out.0` as in diffusers

    def split_heads(self, x: Tensor) -> Tensor:
        return rearrange(x, "b n (nh d) -> b nh n d", nh=self.heads)

    def project_kv(self, tokens: Tensor) -> KV:
        """Keys and values of `tokens` (b, m, c) -> two (b, nh, m, d): cached once per video for the reference."""
        return self.split_heads(self.to_k(tokens)), self.split_heads(self.to_v(tokens))

    def forward(self, x: Tensor, context: Tensor | None = None, ref_kv: KV | None = None,
                num_frames: int = 1) -> Tensor:
        # x: (B, n, c), B = (b f); context: (B, m, c_ctx) or None for self-attention
        # ref_kv: reference keys/values (r, nh, m, d) of the first r videos (r <= b): rows (r f) attend to their own
        # tokens and the reference tokens, the remaining rows (the unconditional branch) to their own tokens only
        q = self.split_heads(self.to_q(x))
        k, v = self.project_kv(x if context is None else context)
        if ref_kv is None:
            out = attend(q, k, v)
        else:
            out = attend_with_reference(q, k, v, ref_kv, num_frames)
        return self.to_out[0](rearrange(out, "b nh n d -> b n (nh d)"))

    def single_token(self, context: Tensor) -> Tensor:
        """Cross-attention to one context token (b, 1, c_ctx) -> (b, 1, c): the softmax over a single key is 1, so
        every query gets that token's value, whatever the query (no to_q, to_k or attention needed)."""
        return self.to_out[0](self.to_v(context))


def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d)) v on (b, nh, n, d): `F.scaled_dot_product_attention`, except for fp32 on the CPU
    over 20 to 31 keys (a temporal layer's frames, e.g. the default window of 24), where PyTorch's CPU kernel costs
    about twice as much as at 16 keys and two batched products and a softmax are faster (one thread, interleaved:
    0.52x the time at 24 frames for head dim 8, 0.81x for 40; at 16 keys or fewer SDPA is the faster one)."""
    if q.device.type != "cpu" or q.dtype != torch.float32 or not 20 <= k.shape[-2] < 32:
        return F.scaled_dot_product_attention(q, k, v)
    b, nh, n, d = q.shape
    q, k, v = (t.reshape(b * nh, -1, t.shape[-1]) for t in (q, k, v))
    scores = torch.baddbmm(q.new_empty(1, 1, 1), q, k.transpose(1, 2), beta=0.0, alpha=d**-0.5)
    return torch.bmm(scores.softmax(-1), v).view(b, nh, n, -1)


def attend_with_reference(q: Tensor, k: Tensor, v: Tensor, ref_kv: KV, num_frames: int) -> Tensor:
    """Attention whose keys/values are [own tokens; reference tokens] for the first r videos' frames.

    Equals the paper's "repeat the reference feature map f times, concatenate along w, self-attend, keep the first
    half" (tests/test_attention.py checks it), without attending from the reference tokens nobody keeps.
    """
    ref_k, ref_v = ref_kv
    rows = ref_k.shape[0] * num_frames
    assert rows <= q.shape[0], f"reference for {ref_k.shape[0]} videos x {num_frames} frames > batch {q.shape[0]}"
    n, m = k.shape[2], ref_k.shape[2]

    def extend(own: Tensor, ref: Tensor) -> Tensor:
        # (r f) nh (n + m) d: one copy, the reference broadcast over frames without repeating it in memory first
        out = own.new_empty(rows, own.shape[1], n + m, own.shape[3])
        out[:, :, :n] = own[:rows]
        out.view(-1, num_frames, *out.shape[1:])[:, :, :, n:] = ref[:, None]
        return out

    out = attend(q[:rows], extend(k, ref_k), extend(v, ref_v))
    if rows == q.shape[0]:
        return out
    return torch.cat([out, attend(q[rows:], k[rows:], v[rows:])])


def layout(x: Tensor) -> torch.memory_format:
    """The memory format of a (b c h w) tensor, so a layer's output can keep its input's (channels-last on CUDA)."""
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


class GEGLU(nn.Module):
    """Linear to 2 x inner, split into (value, gate), value * gelu(gate) with the exact erf GELU."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward, dim -> 4 dim -> dim (keys `net.0.proj`, `net.2`)."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        # net.1 is diffusers' dropout slot (no parameters), kept so the output layer's keys read `net.2`
        self.net = nn.Sequential(GEGLU(dim, mult * dim), nn.Identity(), nn.Linear(mult * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        # x: B n c. Without gradients, rows go through in slices: the 8c-wide GEGLU activations are the UNet's
        # largest (3 GB for the 48 guided frames at 512x768 in fp16), and slicing the rows costs nothing
        if torch.is_grad_enabled() or x.shape[0] * x.shape[1] * self.net[2].in_features <= FF_CHUNK_ELEMENTS:
            return self.net(x)
        rows = max(1, FF_CHUNK_ELEMENTS // (x.shape[1] * self.net[2].in_features))
        return torch.cat([self.net(part) for part in x.split(rows)])


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention to the CLIP context, feed-forward; pre-LayerNorm residuals (diffusers'
    `BasicTransformerBlock`)."""

    def __init__(self, dim: int, heads: int, context_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: Tensor, context: Tensor, ref_kv: KV | None = None,
                num_frames: int = 1) -> tuple[Tensor, Tensor]:
        """Returns the output and the input of attn1 (the feature a ReferenceNet hands over)."""
        # x: (b f) n c; context: (b f) m c_ctx
        n = self.norm1(x)
        x = self.attn1(n, ref_kv=ref_kv, num_frames=num_frames) + x
        if context.shape[1] == 1 and not torch.is_grad_enabled():
            # one CLIP token: exact shortcut; training keeps the full path, so every parameter gets a gradient
            x = self.attn2.single_token(context) + x
        else:
            x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x, n


class Transformer2D(nn.Module):
    """GroupNorm, 1x1-conv proj_in, one transformer block over the h*w tokens, 1x1-conv proj_out, residual.
    (SD 1.x has depth 1 everywhere; `transformer_blocks` is a list only for the checkpoint's key names.)"""

    def __init__(self, channels: int, heads: int, context_dim: int, groups: int = 32) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(channels, heads, context_dim)])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def tokens(self, x: Tensor) -> Tensor:
        return rearrange(self.proj_in(self.norm(x)), "b c h w -> b (h w) c")

    def reference_features(self, x: Tensor) -> Tensor:
        """The input of the block's self-attention, norm1(tokens) (b, n, c): what the ReferenceNet hands over."""
        return self.transformer_blocks[0].norm1(self.tokens(x))

    def forward(self, x: Tensor, context: Tensor, ref_kv: KV | None = None,
                num_frames: int = 1) -> tuple[Tensor, Tensor]:
        """Returns the output and the block's attn1 input (b f) n c (the ReferenceNet's feature)."""
        # x: (b f) c h w; context: (b f) m c_ctx
        h, w = x.shape[-2:]
        t, feature = self.transformer_blocks[0](self.tokens(x), context, ref_kv, num_frames)  # (b f) (h w) c
        # in the input's layout: a channels-last view in an NCHW network would make proj_out, and every conv
        # downstream of the sum, reorder its weights on each call (~35% of a CPU forward); in a channels-last
        # network (CUDA low precision) the view is already that layout and costs no copy
        t = rearrange(t, "b (h w) c -> b c h w", h=h, w=w).contiguous(memory_format=layout(x))
        return self.proj_out(t) + x, feature
