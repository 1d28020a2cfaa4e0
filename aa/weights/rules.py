"""Rename rules from the original SD 1.x names (CompVis latent-diffusion, "LDM") and legacy diffusers names to ours.

Our modules carry diffusers' names, so diffusers files load as they are. SD single files
(`v1-5-pruned-emaonly.safetensors`) name the UNet `model.diffusion_model.*` and the VAE `first_stage_model.*` in
the LDM layout; standalone VAE files (`vae-ft-mse-840000-ema-pruned`) use the same names without a prefix. A rule
is a regex and its replacement, applied in order to every key once the prefix is stripped. The UNet's LDM block
numbers count layers across levels, so those replacements are functions of the match and the config.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from torch import Tensor

from aa.models.config import UNetConfig, VAEConfig
from aa.weights.files import StateDict, WeightsError

Config = UNetConfig | VAEConfig
Replacement = str | Callable[[re.Match[str], Config], str]
Rules = list[tuple[re.Pattern[str], Replacement]]


def _input_block(m: re.Match[str], cfg: UNetConfig) -> str:
    # input_blocks.N.M, N >= 1: level and layer = divmod(N - 1, layers + 1); layer == layers is the downsampler;
    # M = 0 is the ResNet (or the downsampler), M = 1 the transformer
    level, layer = divmod(int(m[1]) - 1, cfg.layers_per_block + 1)
    part, levels = int(m[2]), len(cfg.block_out_channels)
    if layer == cfg.layers_per_block and level < levels - 1 and part == 0:
        return f"down_blocks.{level}.downsamplers.0."
    if layer < cfg.layers_per_block and level < levels and part < 1 + cfg.attention_levels[level]:
        return f"down_blocks.{level}.{('resnets', 'attentions')[part]}.{layer}."
    return m[0]  # no such block in this config: left as is, so strict loading reports it


def _output_block(m: re.Match[str], cfg: UNetConfig) -> str:
    # output_blocks.N: level (lowest resolution first) and layer = divmod(N, layers + 1); M counts the ResNet, the
    # transformer if the level has them, then the upsampler on the level's last layer (all levels but the last)
    level, layer = divmod(int(m[1]), cfg.layers_per_block + 1)
    levels = len(cfg.block_out_channels)
    if level >= levels:
        return m[0]
    parts = ["resnets"] + ["attentions"] * cfg.attention_levels[levels - 1 - level]
    parts += ["upsamplers"] * (layer == cfg.layers_per_block and level < levels - 1)
    part = int(m[2])
    if part >= len(parts):
        return m[0]
    return f"up_blocks.{level}.{parts[part]}.{0 if parts[part] == 'upsamplers' else layer}."


def _decoder_level(m: re.Match[str], cfg: VAEConfig) -> str:
    # LDM numbers decoder levels by resolution (up.0 is the full-resolution level, run last); diffusers by the
    # order they run (up_blocks.0 is the lowest resolution)
    return f"decoder.up_blocks.{len(cfg.block_out_channels) - 1 - int(m[1])}."


UNET_RULES: Rules = [(re.compile(p), r) for p, r in [
    (r"^time_embed\.0\.", "time_embedding.linear_1."),  # time_embed = (Linear, SiLU, Linear)
    (r"^time_embed\.2\.", "time_embedding.linear_2."),
    (r"^input_blocks\.0\.0\.", "conv_in."),  # the first input block is the stem conv
    (r"^input_blocks\.(\d+)\.(\d+)\.", _input_block),  # down levels: ResNets, transformers, downsampler
    (r"^middle_block\.0\.", "mid_block.resnets.0."),  # the mid block is ResNet, transformer, ResNet
    (r"^middle_block\.1\.", "mid_block.attentions.0."),
    (r"^middle_block\.2\.", "mid_block.resnets.1."),
    (r"^output_blocks\.(\d+)\.(\d+)\.", _output_block),  # up levels: ResNets, transformers, upsampler
    (r"^out\.0\.", "conv_norm_out."),  # out = (GroupNorm, SiLU, conv)
    (r"^out\.2\.", "conv_out."),
    (r"\.in_layers\.0\.", ".norm1."),  # ResNet in_layers = (GroupNorm, SiLU, conv)
    (r"\.in_layers\.2\.", ".conv1."),
    (r"\.emb_layers\.1\.", ".time_emb_proj."),  # emb_layers = (SiLU, Linear)
    (r"\.out_layers\.0\.", ".norm2."),  # out_layers = (GroupNorm, SiLU, Dropout, conv)
    (r"\.out_layers\.3\.", ".conv2."),
    (r"\.skip_connection\.", ".conv_shortcut."),  # the 1x1 conv where the width changes
    (r"\.downsamplers\.0\.op\.", ".downsamplers.0.conv."),  # LDM's Downsample calls its stride-2 conv `op`
]]  # inside the transformers the names are the same in both: attn1.to_q, ff.net.0.proj, proj_in, ...

VAE_RULES: Rules = [(re.compile(p), r) for p, r in [
    (r"^encoder\.down\.(\d+)\.block\.", r"encoder.down_blocks.\1.resnets."),  # encoder levels: same order in both
    (r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0."),
    (r"^decoder\.up\.(\d+)\.", _decoder_level),  # decoder levels: reversed numbering
    (r"^(decoder\.up_blocks\.\d+)\.block\.", r"\1.resnets."),
    (r"^(decoder\.up_blocks\.\d+)\.upsample\.", r"\1.upsamplers.0."),
    (r"^(encoder|decoder)\.mid\.block_1\.", r"\1.mid_block.resnets.0."),  # mid = ResNet, attention, ResNet
    (r"^(encoder|decoder)\.mid\.attn_1\.", r"\1.mid_block.attentions.0."),
    (r"^(encoder|decoder)\.mid\.block_2\.", r"\1.mid_block.resnets.1."),
    (r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out."),  # the GroupNorm before conv_out
    (r"\.nin_shortcut\.", ".conv_shortcut."),  # the 1x1 conv where the width changes
    (r"\.attentions\.0\.norm\.", ".attentions.0.group_norm."),  # LDM AttnBlock: norm, then q, k, v, proj_out
    (r"\.attentions\.0\.(?:q|query)\.", ".attentions.0.to_q."),  # LDM `q`, diffusers < 0.14 `query`
    (r"\.attentions\.0\.(?:k|key)\.", ".attentions.0.to_k."),
    (r"\.attentions\.0\.(?:v|value)\.", ".attentions.0.to_v."),
    (r"\.attentions\.0\.(?:proj_out|proj_attn)\.", ".attentions.0.to_out.0."),
]]  # community single files that already say mid.attn_1.to_q/to_k/to_v/to_out.0 need only the mid_block rule

# LDM's VAE attention projects with 1x1 convs, [c, c, 1, 1]; ours (and diffusers') are Linear layers, [c, c]
VAE_CONV_ATTENTION = re.compile(r"mid_block\.attentions\.0\.(?:to_q|to_k|to_v|to_out\.0)\.weight$")


def rename(key: str, rules: Rules, cfg: Config) -> str:
    """Apply every rule in order to one key."""
    for pattern, repl in rules:
        key = pattern.sub(repl if isinstance(repl, str) else (lambda m, r=repl: r(m, cfg)), key, count=1)
    return key


def squeeze_conv_attention(key: str, t: Tensor) -> Tensor:
    """A 1x1-conv attention weight [c, c, 1, 1] (or [c, c, 1]) as the Linear weight [c, c]: a view, no copy."""
    if VAE_CONV_ATTENTION.search(key) and t.ndim > 2 and all(s == 1 for s in t.shape[2:]):
        return t.view(t.shape[0], t.shape[1]) if t.is_contiguous() else t.reshape(t.shape[0], t.shape[1])
    return t


def convert(state: StateDict, rules: Rules, cfg: Config, source: str) -> StateDict:
    """Rename every key with `rules` (and squeeze the VAE's conv attention weights). The tensors are not copied.

    Two keys landing on one name (a file holding both `q` and `to_q`) is an error naming both.
    """
    out: StateDict = {}
    origin: dict[str, str] = {}
    for key, t in state.items():
        new = rename(key, rules, cfg)
        if new in out:
            raise WeightsError(f"{source}: `{origin[new]}` and `{key}` both map to `{new}`; the file holds two "
                               f"copies of one tensor under different names")
        out[new], origin[new] = squeeze_conv_attention(new, t), key
    return out
