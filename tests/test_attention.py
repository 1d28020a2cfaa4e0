"""Attention: the SDPA path against the textbook formula, and the paper's spatial attention against extra K/V."""
import math

import torch
from einops import rearrange, repeat

from aa.models.attention import Attention, TransformerBlock, attend

torch.manual_seed(0)


def textbook(q, k, v):
    """softmax(q k^T / sqrt(d)) v, written out."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return scores.softmax(dim=-1) @ v


def manual_attention(attn: Attention, x, context=None):
    ctx = x if context is None else context
    q, k, v = (attn.split_heads(f(t)) for f, t in ((attn.to_q, x), (attn.to_k, ctx), (attn.to_v, ctx)))
    return attn.to_out[0](rearrange(textbook(q, k, v), "b nh n d -> b n (nh d)"))


def test_self_and_cross_attention_equal_the_textbook_formula():
    """softmax(QK^T/sqrt(d))V per head, then the output projection: SDPA gives the same numbers."""
    attn = Attention(32, heads=4, context_dim=12)
    x, ctx = torch.randn(3, 10, 32), torch.randn(3, 5, 12)
    torch.testing.assert_close(attn(x, ctx), manual_attention(attn, x, ctx), atol=1e-5, rtol=1e-5)
    self_attn = Attention(32, heads=4)
    torch.testing.assert_close(self_attn(x), manual_attention(self_attn, x), atol=1e-5, rtol=1e-5)


def test_attend_equals_sdpa_on_both_sides_of_the_short_key_path():
    """`attend` takes plain batched products for 20-31 keys on the CPU (a temporal layer's frames) and SDPA
    otherwise: values and gradients equal SDPA's on both sides, on head-split (strided) views as Attention passes
    them."""
    for n, m in ((24, 24), (7, 31), (5, 20), (12, 12), (24, 32), (40, 48)):
        x = torch.randn(2, n, 4 * 8, requires_grad=True)
        y = torch.randn(2, m, 4 * 8, requires_grad=True)
        q, k, v = (rearrange(t, "b n (nh d) -> b nh n d", nh=4) for t in (x, y * 0.5, y.flip(1)))
        out = attend(q, k, v)
        torch.testing.assert_close(out, textbook(q, k, v), atol=1e-5, rtol=1e-5)
        gx, gy = torch.autograd.grad(out.square().sum(), (x, y), retain_graph=True)
        want = torch.autograd.grad(torch.nn.functional.scaled_dot_product_attention(q, k, v).square().sum(), (x, y))
        torch.testing.assert_close((gx, gy), want, atol=1e-5, rtol=1e-5)


def test_paper_spatial_attention_equals_extra_reference_kv():
    """Paper 3.2: repeat the reference map f times, concatenate along w, self-attend, keep the first half ==
    queries from the frame, keys/values from [frame tokens; reference tokens]."""
    f, h, w, c = 3, 4, 5, 16
    attn = Attention(c, heads=2)
    x1, x2 = torch.randn(f, h, w, c), torch.randn(h, w, c)
    cat = torch.cat([x1, repeat(x2, "h w c -> f h w c", f=f)], dim=2)  # f h 2w c
    out = attn(rearrange(cat, "f h w c -> f (h w) c"))
    paper = rearrange(out, "f (h w) c -> f h w c", h=h)[:, :, :w]  # keep the first half along w
    ref_kv = attn.project_kv(rearrange(x2, "h w c -> 1 (h w) c"))
    ours = attn(rearrange(x1, "f h w c -> f (h w) c"), ref_kv=ref_kv, num_frames=f)
    torch.testing.assert_close(rearrange(ours, "f (h w) c -> f h w c", h=h), paper, atol=1e-5, rtol=1e-5)


def test_cached_reference_kv_equals_projecting_the_concatenation():
    """Keys/values projected once from the reference equal to_k/to_v of [frame; reference] recomputed per frame
    (the Moore way): projection is linear, so caching changes nothing."""
    b, f, n, m, c = 2, 3, 6, 4, 16
    block = TransformerBlock(c, heads=2, context_dim=8)
    x, ref, ctx = torch.randn(b * f, n, c), torch.randn(b, m, c), torch.randn(b * f, 1, 8)
    cached, _ = block(x, ctx, block.attn1.project_kv(ref), num_frames=f)

    attn = block.attn1
    normed = block.norm1(x)
    kv_src = torch.cat([normed, ref.repeat_interleave(f, 0)], dim=1)  # (b f) (n + m) c
    q = attn.split_heads(attn.to_q(normed))
    k, v = attn.split_heads(attn.to_k(kv_src)), attn.split_heads(attn.to_v(kv_src))
    h = attn.to_out[0](rearrange(textbook(q, k, v), "b nh n d -> b n (nh d)")) + x
    h = block.attn2(block.norm2(h), ctx) + h
    recomputed = block.ff(block.norm3(h)) + h
    torch.testing.assert_close(cached, recomputed, atol=1e-5, rtol=1e-5)


def test_reference_applies_to_the_leading_videos_only():
    """Batched guidance: rows of the first r videos see the reference, the others (unconditional) plain
    self-attention; the result equals running the two groups separately."""
    f, n, m, c = 2, 5, 3, 8
    attn = Attention(c, heads=2)
    cond, uncond, ref = torch.randn(1 * f, n, c), torch.randn(2 * f, n, c), torch.randn(1, m, c)
    kv = attn.project_kv(ref)
    both = attn(torch.cat([cond, uncond]), ref_kv=kv, num_frames=f)
    torch.testing.assert_close(both[:f], attn(cond, ref_kv=kv, num_frames=f), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(both[f:], attn(uncond), atol=1e-6, rtol=1e-6)
