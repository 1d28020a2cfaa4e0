"""The AnimateDiff temporal layer: parity with the original code through our loader, what the layer can and
cannot mix, the sinusoid, long windows, and AnimateDiff v1's pooled ResNet norms."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from aa.models import config
from aa.models.config import MotionConfig
from aa.models.resnet import ResnetBlock2D
from aa.models.temporal import MotionModule, PositionalEncoding, sinusoid_table
from aa.models.unet import UNet
from aa.weights.animate import insert_motion_modules, load_motion_modules

GOLDEN = Path(__file__).parent / "data" / "golden_motion"
TINY = config.tiny().unet
STAGE1 = replace(TINY, motion=None)


@pytest.fixture(scope="module")
def golden():
    """tools/make_golden_motion.py's files: an fp16 AnimateDiff-format file for the tiny UNet, and the original
    AnimateDiff module's inputs and outputs (see that script for the oracle)."""
    unet = UNet(STAGE1).eval()
    motion = insert_motion_modules(unet, GOLDEN / "mm_tiny_v2.safetensors", num_heads=2)
    with safe_open(str(GOLDEN / "io.safetensors"), framework="pt") as f:
        io = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    return unet, motion, io, int(meta["frames"]), int(meta["long_frames"])


def module_at(unet: UNet, prefix: str) -> MotionModule:
    return unet.get_submodule(prefix)


@pytest.mark.parametrize("prefix", ["down_blocks.0.motion_modules.0", "mid_block.motion_modules.0"])
def test_matches_the_original_animatediff_module(golden, prefix):
    """Loaded from an AnimateDiff-format file by our loader, a module computes what the original AnimateDiff code
    computes on the same weights (per-frame GroupNorm), within 1e-4; diffusers' port, which pools that GroupNorm
    over frames, is visibly different on frames with different statistics."""
    unet, motion, io, frames, _ = golden
    assert motion == replace(config.animatediff("v2"), num_heads=2)
    with torch.no_grad():
        y = module_at(unet, prefix)(io[f"{prefix}.x"], frames)
    torch.testing.assert_close(y, io[f"{prefix}.y"], atol=1e-4, rtol=0)
    assert (y - io[f"{prefix}.y_diffusers_pooled"]).abs().max() > 0.1


def test_windows_longer_than_the_table_match_the_original_with_a_longer_table(golden):
    """40 frames > the stored 32: the sinusoid is extended by its formula, which is what the original computes when
    built with a longer table."""
    unet, _, io, _, long_frames = golden
    prefix = "mid_block.motion_modules.0"
    with torch.no_grad():
        y = module_at(unet, prefix)(io[f"{prefix}.x_long"], long_frames)
    torch.testing.assert_close(y, io[f"{prefix}.y_long"], atol=1e-4, rtol=0)


def test_group_norm_eps_matches_the_original_on_near_constant_groups(golden):
    """An input whose every other GroupNorm group is scaled by 1e-3 (group variance ~1e-6, the size of eps) gives
    the original module's output within 1e-4: eps 1e-6, as the original's GroupNorm has (1e-5 moves it by ~1.8)."""
    unet = golden[0]
    prefix = "down_blocks.0.motion_modules.0"
    with safe_open(str(GOLDEN / "numerics.safetensors"), framework="pt") as f:
        io, frames = {k: f.get_tensor(k) for k in f.keys()}, int(f.metadata()["frames"])
    with torch.no_grad():
        y = module_at(unet, prefix)(io[f"{prefix}.x_small"], frames)
    torch.testing.assert_close(y, io[f"{prefix}.y_small"], atol=1e-4, rtol=0)


def test_sinusoid_is_the_formula():
    """pe[p, 2i] = sin(p / 10000^(2i/C)), pe[p, 2i+1] = cos(p / 10000^(2i/C)), written out element by element."""
    length, dim = 24, 10
    table = sinusoid_table(length, dim)
    expected = torch.tensor([[math.sin(p / 10000 ** (i / dim)) if i % 2 == 0 else
                              math.cos(p / 10000 ** ((i - 1) / dim)) for i in range(dim)] for p in range(length)])
    torch.testing.assert_close(table, expected, atol=1e-6, rtol=0)


def test_long_windows_extend_the_table_without_changing_its_start():
    """A window longer than max_len gets the first f rows of the same sinusoid: the stored rows are unchanged."""
    encoding = PositionalEncoding(dim=8, max_len=4)
    x = torch.randn(3, 6, 8)  # (b n) f c with f = 6 > 4
    torch.testing.assert_close(encoding(x), x + sinusoid_table(6, 8))
    torch.testing.assert_close(sinusoid_table(6, 8)[:4], encoding.pe)
    torch.testing.assert_close(encoding(x[:, :3]), x[:, :3] + encoding.pe[:3])


def random_module(channels: int = 16, seed: int = 0) -> MotionModule:
    torch.manual_seed(seed)
    module = MotionModule(channels, MotionConfig(num_heads=2, max_len=8), groups=4).eval()
    for p in module.parameters():
        p.data.add_(0.3 * torch.randn_like(p))  # proj_out no longer zero
    return module


def test_zero_initialised_layer_is_the_identity():
    """proj_out starts at zero, so a new temporal layer returns its input exactly: inserting one into a trained
    UNet changes nothing until it trains (paper 3.3)."""
    torch.manual_seed(0)
    module = MotionModule(16, MotionConfig(num_heads=2), groups=4)
    x = torch.randn(2 * 5, 16, 3, 4)
    assert torch.equal(module(x, num_frames=5), x)


def test_attention_runs_along_frames_only():
    """With the GroupNorm bypassed (the one step that pools over h w), each spatial position's output depends only
    on that position's frames: the layer on (b f) c h w equals the layer run on every position as a 1x1 video."""
    module = random_module()
    module.temporal_transformer.norm = nn.Identity()
    b, f, h, w = 2, 5, 3, 4
    x = torch.randn(b * f, 16, h, w)
    with torch.no_grad():
        whole = module(x, f)
        for i in range(h):
            for j in range(w):
                torch.testing.assert_close(whole[:, :, i:i + 1, j:j + 1], module(x[:, :, i:i + 1, j:j + 1], f),
                                           atol=1e-5, rtol=1e-5)


def test_attention_mixes_frames():
    """...and it does mix frames: changing frame 0 changes every frame's output of the same video, none of the
    other video's."""
    module = random_module()
    b, f = 2, 4
    x = torch.randn(b * f, 16, 2, 2)
    y = x.clone()
    y[0] = torch.randn_like(y[0])  # (an offset would not do: the per-frame GroupNorm removes it)
    with torch.no_grad():
        changed = (module(x, f) - module(y, f)).flatten(1).abs().amax(1)
    assert (changed[:f] > 1e-3).all() and (changed[f:] == 0).all()


def test_zero_temporal_layers_leave_the_stage1_unet_unchanged():
    """A video UNet whose temporal layers are new (zero proj_out) equals the stage-1 UNet it was made from; with
    v1's pooled ResNet norms that holds at one frame, where pooling over frames pools over nothing."""
    torch.manual_seed(0)
    stage1 = UNet(STAGE1).eval()
    x, t, ctx = torch.randn(3, 4, 8, 8), torch.tensor([500]), torch.randn(1, 1, 16)
    with torch.no_grad():
        expected = stage1(x, t, ctx, num_frames=3)
        single = stage1(x[:1], t, ctx)
        stage1.add_motion_modules(replace(config.animatediff("v2"), num_heads=2))
        torch.testing.assert_close(stage1(x, t, ctx, num_frames=3), expected, atol=0, rtol=0)
        stage1.add_motion_modules(replace(config.animatediff("v1"), num_heads=2))
        torch.testing.assert_close(stage1(x[:1], t, ctx, num_frames=1), single, atol=1e-6, rtol=1e-6)


def test_pooled_resnet_norm_differs_only_when_frames_differ():
    """AnimateDiff v1 normalises the UNet's ResNets with statistics over all frames of a video. Frames that differ
    give a different result from per-frame norms; identical frames give the same one."""
    torch.manual_seed(0)
    block = ResnetBlock2D(8, 8, temb_dim=None, groups=4).eval()
    f = 4
    varied = torch.randn(f, 8, 5, 5) * torch.linspace(0.5, 2.0, f)[:, None, None, None]
    same = torch.randn(1, 8, 5, 5).expand(f, -1, -1, -1)
    with torch.no_grad():
        per_frame = {name: block(x, num_frames=f) for name, x in [("varied", varied), ("same", same)]}
        block.pool_frames = True
        pooled = {name: block(x, num_frames=f) for name, x in [("varied", varied), ("same", same)]}
    assert (pooled["varied"] - per_frame["varied"]).abs().max() > 1e-2
    torch.testing.assert_close(pooled["same"], per_frame["same"], atol=1e-5, rtol=1e-5)


def test_v1_unet_pools_resnet_norms_over_frames():
    """A UNet given v1 modules pools every ResNet norm (and conv_norm_out) over frames: with zero temporal layers,
    a video whose frames differ comes out differently from the per-frame UNet, one of identical frames does not."""
    torch.manual_seed(0)
    unet = UNet(STAGE1).eval()
    t, ctx = torch.tensor([500]), torch.randn(1, 1, 16)
    varied, same = torch.randn(3, 4, 8, 8), torch.randn(1, 4, 8, 8).expand(3, -1, -1, -1)
    with torch.no_grad():
        per_frame = [unet(x, t, ctx, num_frames=3) for x in (varied, same)]
        unet.add_motion_modules(replace(config.animatediff("v1"), num_heads=2))
        pooled = [unet(x, t, ctx, num_frames=3) for x in (varied, same)]
    assert (pooled[0] - per_frame[0]).abs().max() > 1e-3
    torch.testing.assert_close(pooled[1], per_frame[1], atol=1e-5, rtol=1e-5)


def test_golden_file_is_detected_as_v2():
    """The golden file has a mid-block module and 32-long tables: AnimateDiff v2, per-frame ResNet norms; its fp16
    tables are accepted within fp16 rounding."""
    state, motion = load_motion_modules(GOLDEN / "mm_tiny_v2.safetensors", TINY)
    assert motion == replace(config.animatediff("v2"), num_heads=2) and not motion.pooled_resnet_norm
    assert all(v.dtype == torch.float16 for v in state.values())
