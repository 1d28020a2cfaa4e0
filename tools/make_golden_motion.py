"""Generate the motion-module golden fixtures under tests/data/golden_motion/ (run in the reference env).

    OMP_NUM_THREADS=1 python tools/make_golden_motion.py

The reference env: requirements-golden.txt.

The oracle is the ORIGINAL AnimateDiff motion module, transcribed below from guoyww/AnimateDiff
`animatediff/models/motion_module.py` (VanillaTemporalModule -> TemporalTransformer3DModel ->
TemporalTransformerBlock -> VersatileAttention with PositionalEncoding; temporal self-attention only, no cross-frame
modes, dropout 0), and built, as the original is, on diffusers' `Attention` and `FeedForward` (diffusers 0.42 here),
with the original's attention path: `head_to_batch_dim`, `get_attention_scores` (baddbmm + softmax), `bmm`,
`batch_to_head_dim`, `to_out`. Its semantics: input b c f h w, GroupNorm on (b f) c h w (per frame), Linear
proj_in, for each attention block LayerNorm -> fold to (b h w) f c -> add pe[:f] -> attention over f -> unfold ->
residual, GEGLU feed-forward with its LayerNorm, Linear proj_out, residual.

Cross-check: diffusers' own port (`AnimateDiffTransformer3D`, what `MotionAdapter` builds) loaded with the same
weights must agree with the transcription to 1e-5 once its GroupNorm is swapped for a per-frame one. Unmodified it
pools the GroupNorm statistics over the frames of a video, which the original never did: its output is
stored as `*.y_diffusers_pooled` only to show the difference, never as a target.

Writes:
- mm_tiny_v2.safetensors: AnimateDiff-format motion modules for `aa.models.config.tiny()`'s UNet (widths 32/64, 2 heads,
  8 groups, mid-block module, pe length 32: detected as v2), random weights (proj_out too), stored in fp16 with
  fp16 `pos_encoder.pe` like an fp16 `.safetensors` twin. The oracle runs in fp32 on the fp16-rounded weights and
  its own fp32 sinusoid (the stored fp16 table is what loaders check and drop).
- io.safetensors (fp32): for two modules (32 and 64 channels) an input `x` ((b f) c h w, frames with different
  statistics) and the oracle's `y`; for the mid-block module also a 40-frame window (`x_long`, `y_long`), longer
  than the stored table, where the oracle uses a 48-long table (the sinusoid is deterministic; its first 32 rows are
  the stored ones). Metadata: frames, long_frames.
- numerics.safetensors (fp32): for the 32-channel module an input `x_small` whose every other GroupNorm group is
  scaled by 1e-3 (group variance ~1e-6, where the norm's eps, 1e-6, counts) and the oracle's `y_small`. Metadata:
  frames, and how far the oracle's outputs move with eps 1e-5, or with tanh-GELU in its GEGLU (`moved`); random
  inputs of O(1) hide both.
The project's tests read these files and never import diffusers.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.activations import GEGLU
from diffusers.models.attention import Attention, FeedForward
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from safetensors.torch import save_file
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def to_frames(x: torch.Tensor) -> torch.Tensor:
    """b c f h w -> (b f) c h w (einops is not in the reference env)."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def to_video(x: torch.Tensor, f: int) -> torch.Tensor:
    """(b f) c h w -> b c f h w."""
    bf, c, h, w = x.shape
    return x.reshape(bf // f, f, c, h, w).permute(0, 2, 1, 3, 4)


def swap(x: torch.Tensor, n: int) -> torch.Tensor:
    """(b n) m c -> (b m) n c: the original's "(b f) d c -> (b d) f c" and back."""
    bn, m, c = x.shape
    return x.reshape(bn // n, n, m, c).transpose(1, 2).reshape(bn // n * m, n, c)
# aa.models.config.tiny()'s UNet: (32, 64) widths, one layer per down level, two per up level, a mid-block module
MODULES = {
    "down_blocks.0.motion_modules.0": 32, "down_blocks.1.motion_modules.0": 64, "mid_block.motion_modules.0": 64,
    "up_blocks.0.motion_modules.0": 64, "up_blocks.0.motion_modules.1": 64,
    "up_blocks.1.motion_modules.0": 32, "up_blocks.1.motion_modules.1": 32,
}
HEADS, GROUPS, MAX_LEN = 2, 8, 32
TESTED = ["down_blocks.0.motion_modules.0", "mid_block.motion_modules.0"]


# ---- the original AnimateDiff motion module, transcribed (temporal self-attention, dropout 0) ----

class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(1, max_len, d_model)
        pe[0, :, 0::2] = torch.sin(position * div_term)
        pe[0, :, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, :x.size(1)]


class VersatileAttention(Attention):
    def __init__(self, max_len: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pos_encoder = PositionalEncoding(kwargs["query_dim"], max_len)

    def forward(self, hidden_states: torch.Tensor, video_length: int) -> torch.Tensor:  # type: ignore[override]
        d = hidden_states.shape[1]
        hidden_states = swap(hidden_states, video_length)  # (b f) d c -> (b d) f c
        hidden_states = self.pos_encoder(hidden_states)
        query = self.head_to_batch_dim(self.to_q(hidden_states)).contiguous()
        key = self.head_to_batch_dim(self.to_k(hidden_states)).contiguous()
        value = self.head_to_batch_dim(self.to_v(hidden_states)).contiguous()
        attention_probs = self.get_attention_scores(query, key, None)
        hidden_states = self.batch_to_head_dim(torch.bmm(attention_probs, value))
        hidden_states = self.to_out[1](self.to_out[0](hidden_states))
        return swap(hidden_states, d)  # (b d) f c -> (b f) d c


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, max_len: int) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList([
            VersatileAttention(max_len, query_dim=dim, cross_attention_dim=None, heads=heads, dim_head=dim // heads,
                               dropout=0.0, bias=False, upcast_attention=False) for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])
        self.ff = FeedForward(dim, dropout=0.0, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, hidden_states: torch.Tensor, video_length: int) -> torch.Tensor:
        for attention_block, norm in zip(self.attention_blocks, self.norms):
            hidden_states = attention_block(norm(hidden_states), video_length=video_length) + hidden_states
        return self.ff(self.ff_norm(hidden_states)) + hidden_states


class TemporalTransformer3DModel(nn.Module):
    def __init__(self, channels: int, heads: int, groups: int, max_len: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, heads, max_len)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        video_length = hidden_states.shape[2]
        hidden_states = to_frames(hidden_states)
        batch, channel, height, width = hidden_states.shape
        residual = hidden_states
        hidden_states = self.norm(hidden_states)
        hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch, height * width, channel)
        hidden_states = self.proj_in(hidden_states)
        for block in self.transformer_blocks:
            hidden_states = block(hidden_states, video_length=video_length)
        hidden_states = self.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch, height, width, channel).permute(0, 3, 1, 2).contiguous()
        return to_video(hidden_states + residual, video_length)


class VanillaTemporalModule(nn.Module):
    def __init__(self, channels: int, heads: int = HEADS, groups: int = GROUPS, max_len: int = MAX_LEN) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer3DModel(channels, heads, groups, max_len)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(b f) c h w in and out, as the project's modules (the original takes and returns b c f h w)."""
        return to_frames(self.temporal_transformer(to_video(x, num_frames)))


# ---- diffusers' port, for the cross-check ----

class PerFrameGroupNorm(nn.Module):
    """The original's per-frame GroupNorm on diffusers' b c f h w layout (its own GroupNorm pools over f)."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.inner = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_video(self.inner(to_frames(x)), x.shape[2])


def to_diffusers(key: str) -> str:
    """AnimateDiff -> diffusers MotionAdapter names (formats/map_animatediff_to_diffusers_motion_adapter.tsv)."""
    key = key.replace("temporal_transformer.", "")
    for i in range(2):
        key = key.replace(f"attention_blocks.{i}.", f"attn{i + 1}.").replace(f"norms.{i}.", f"norm{i + 1}.")
    return key.replace("ff_norm.", "norm3.")


def diffusers_module(oracle: VanillaTemporalModule, channels: int, per_frame: bool) -> AnimateDiffTransformer3D:
    port = AnimateDiffTransformer3D(num_attention_heads=HEADS, attention_head_dim=channels // HEADS,
                                    in_channels=channels, norm_num_groups=GROUPS, cross_attention_dim=None,
                                    activation_fn="geglu", attention_bias=False, positional_embeddings="sinusoidal",
                                    num_positional_embeddings=MAX_LEN)
    state = {to_diffusers(k): v for k, v in oracle.state_dict().items() if not k.endswith("pos_encoder.pe")}
    missing, unexpected = port.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("pos_embed.pe") for k in missing), (missing, unexpected)
    if per_frame:
        port.norm = PerFrameGroupNorm(port.norm)
    return port.eval()


def video_input(gen: torch.Generator, b: int, f: int, c: int, h: int, w: int) -> torch.Tensor:
    """Random (b f) c h w whose frames differ in mean and scale, so per-frame and pooled norms disagree."""
    scale = 0.5 + 2.0 * torch.rand(b * f, 1, 1, 1, generator=gen)
    offset = torch.randn(b * f, 1, 1, 1, generator=gen)
    return torch.randn(b * f, c, h, w, generator=gen) * scale + offset


def small_groups(x: torch.Tensor, groups: int, scale: float = 1e-3) -> torch.Tensor:
    """x with every other channel group of a `groups`-group GroupNorm scaled by `scale` (near-constant groups)."""
    c = x.shape[1]
    factor = torch.ones(groups)
    factor[1::2] = scale
    return x * factor.repeat_interleave(c // groups)[None, :, None, None]


def moved_by(oracle: VanillaTemporalModule, x: torch.Tensor, frames: int) -> dict[str, float]:
    """Max abs change of the oracle's output on x under eps 1e-5 in its GroupNorm, or tanh-GELU in its GEGLU."""
    base, moved = oracle(x, frames), {}
    norm = oracle.temporal_transformer.norm
    norm.eps = 1e-5
    moved["GroupNorm eps 1e-6 -> 1e-5"] = (oracle(x, frames) - base).abs().max().item()
    norm.eps = 1e-6
    geglus = [m for m in oracle.modules() if isinstance(m, GEGLU)]
    for m in geglus:
        m.gelu = lambda g: F.gelu(g, approximate="tanh")
    moved["GEGLU erf -> tanh GELU"] = (oracle(x, frames) - base).abs().max().item()
    for m in geglus:
        del m.gelu  # back to the class's exact GELU
    return moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests/data/golden_motion", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and inputs")
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(args.seed)

    oracles, file = {}, {}
    for prefix, c in MODULES.items():
        oracle = VanillaTemporalModule(c).eval()
        for module in oracle.modules():  # every layer matters: proj_out is not zero, norms are not the identity
            if isinstance(module, (nn.GroupNorm, nn.LayerNorm, nn.Linear)):
                norm = not isinstance(module, nn.Linear)
                weight = torch.randn(module.weight.shape, generator=gen)
                module.weight.data = 1 + 0.1 * weight if norm else weight / math.sqrt(module.weight.shape[1])
                if module.bias is not None:
                    module.bias.data = 0.1 * torch.randn(module.bias.shape, generator=gen)
        for p in oracle.parameters():
            p.data = p.data.half().float()  # exactly what the fp16 file holds
        oracles[prefix] = oracle
        file.update({f"{prefix}.{k}": v.half() for k, v in oracle.state_dict().items()})

    b, f, h, w = 2, 8, 2, 3
    io: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for prefix in TESTED:
            c, oracle = MODULES[prefix], oracles[prefix]
            x = video_input(gen, b, f, c, h, w)
            y = oracle(x, f)
            cross = diffusers_module(oracle, c, per_frame=True)(x, num_frames=f)
            pooled = diffusers_module(oracle, c, per_frame=False)(x, num_frames=f)
            err = (cross - y).abs().max().item()
            assert err < 1e-5, f"{prefix}: diffusers with per-frame GroupNorm differs from the original by {err}"
            print(f"{prefix}: original vs diffusers per-frame {err:.2e}, vs diffusers pooled "
                  f"{(pooled - y).abs().max().item():.2e}")
            io.update({f"{prefix}.x": x, f"{prefix}.y": y, f"{prefix}.y_diffusers_pooled": pooled})

        long_f, prefix = 40, "mid_block.motion_modules.0"
        longer = VanillaTemporalModule(MODULES[prefix], max_len=48).eval()
        longer.load_state_dict({k: v for k, v in oracles[prefix].state_dict().items() if not k.endswith(".pe")},
                               strict=False)
        pe = longer.temporal_transformer.transformer_blocks[0].attention_blocks[0].pos_encoder.pe
        assert torch.equal(pe[:, :MAX_LEN], oracles[prefix].temporal_transformer.transformer_blocks[0]
                           .attention_blocks[0].pos_encoder.pe)
        x = video_input(gen, 1, long_f, MODULES[prefix], h, w)
        io.update({f"{prefix}.x_long": x, f"{prefix}.y_long": longer(x, long_f)})

        prefix = TESTED[0]
        x = small_groups(video_input(gen, b, f, MODULES[prefix], h, w), GROUPS)
        numerics = {f"{prefix}.x_small": x, f"{prefix}.y_small": oracles[prefix](x, f)}
        moved = moved_by(oracles[prefix], x, f)
        print(f"{prefix}: with near-constant groups the output moves by {moved}; on plain random inputs by "
              f"{moved_by(oracles[prefix], io[f'{prefix}.x'], f)}")
        assert moved["GroupNorm eps 1e-6 -> 1e-5"] > 1e-3, moved

    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in numerics.items()}, str(args.out / "numerics.safetensors"),
              metadata={"frames": str(f), "moved": json.dumps(moved)})
    save_file(file, str(args.out / "mm_tiny_v2.safetensors"))
    save_file({k: v.contiguous() for k, v in io.items()}, str(args.out / "io.safetensors"),
              metadata={"frames": str(f), "long_frames": str(long_f)})
    print(f"wrote {len(file)} weights and {len(io)} io tensors to {args.out}")


if __name__ == "__main__":
    main()
