"""The UNet on folded frames, the ReferenceNet's features, the Pose Guider (tiny configs, CPU)."""
from dataclasses import replace

import pytest
import torch

from aa.models import config
from aa.models.pose_guider import PoseGuider
from aa.models.reference import ReferenceNet, reference_state
from aa.models.unet import UNet

CFG = config.tiny()
STAGE1 = replace(CFG.unet, motion=None)


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    unet, ref = UNet(STAGE1).eval(), ReferenceNet(STAGE1).eval()
    for p in [*unet.parameters(), *ref.parameters()]:  # make every layer matter (proj_out etc. are not zero)
        p.data.add_(0.05 * torch.randn_like(p))
    return unet, ref


def test_without_temporal_layers_frames_are_independent(nets):
    """Stage-1 UNet on (b f) c h w with num_frames=f equals running each video's frames as separate images."""
    unet, _ = nets
    b, f = 2, 3
    x, ctx, t = torch.randn(b * f, 4, 8, 8), torch.randn(b, 1, 16), torch.tensor([10, 700])
    folded = unet(x, t, ctx, num_frames=f)
    single = unet(x, t.repeat_interleave(f), ctx.repeat_interleave(f, 0))
    torch.testing.assert_close(folded, single, atol=1e-5, rtol=1e-5)


def test_reference_features_are_the_attn1_inputs_of_a_full_pass(nets):
    """The ReferenceNet stops after the last block's norm1, and the features it returns equal the attn1 inputs
    that a full UNet pass with the same weights computes (one (b, h*w, c) per transformer, in block order)."""
    unet, ref = nets
    full = UNet(STAGE1)
    full.load_state_dict(ref.state_dict(), strict=False)  # same body; the head is irrelevant here
    lat, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 1, 16)
    feats = ref(lat, ctx)
    collected = []
    temb, c = full.embed(0, ctx, 2, 1)
    full.trunk(full.conv_in(lat), temb, c, None, 1, collected)
    assert len(feats) == len(collected) == len(unet.transformers())
    for a, b in zip(feats, collected):
        torch.testing.assert_close(a, b)
    widths = [t.proj_in.out_channels for t in unet.transformers()]
    assert [f.shape[-1] for f in feats] == widths


@pytest.mark.parametrize("attention", [(True, False), (False, True), (False, False)])
def test_referencenet_trains_only_what_feeds_its_features(attention):
    """Every parameter but `unused_parameters()` gets a gradient from the features; those get none. The last
    transformer may sit in the last up level (SD), an earlier one (the demo) or only in the mid block."""
    ref = ReferenceNet(replace(STAGE1, attention_levels=attention))
    sum(f.sum() for f in ref(torch.randn(1, 4, 8, 8), torch.randn(1, 1, 16))).backward()
    unused = set(map(id, ref.unused_parameters()))
    assert unused, "the last block's attention/feed-forward/proj_out are unused"
    for name, p in ref.named_parameters():
        assert (p.grad is None) == (id(p) in unused), name


def test_unconditional_rows_ignore_the_reference(nets):
    """Batched guidance: video 0 with reference K/V, video 1 (zero context) without; video 1's prediction equals
    a plain pass, and the reference does change video 0's."""
    unet, ref = nets
    f = 2
    x, ctx = torch.randn(f, 4, 8, 8), torch.randn(1, 1, 16)
    kv = unet.reference_kv(ref(torch.randn(1, 4, 8, 8), ctx))
    both = unet(torch.cat([x, x]), 50, torch.cat([ctx, torch.zeros_like(ctx)]), ref_kv=kv, num_frames=f)
    torch.testing.assert_close(both[f:], unet(x, 50, torch.zeros_like(ctx), num_frames=f), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(both[:f], unet(x, 50, ctx, num_frames=f), atol=1e-3)


def test_gradient_checkpointing_gives_the_same_gradients(nets):
    """Recomputing activations in backward changes memory, not results."""
    unet, _ = nets
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 1, 16)
    grads = []
    for ckpt in (False, True):
        unet.zero_grad()
        unet.gradient_checkpointing = ckpt
        unet(x, 3, ctx).square().mean().backward()
        grads.append([p.grad.clone() for p in unet.parameters()])
    unet.gradient_checkpointing = False
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_pose_guider_starts_as_zero_and_reaches_latent_resolution():
    """Zero-initialised conv_out: a new guider adds nothing; its output is 8x smaller with conv_in's width."""
    guider = PoseGuider(CFG.pose_guider)
    out = guider(torch.rand(3, 3, 64, 48))
    assert out.shape == (3, CFG.unet.block_out_channels[0], 8, 6)
    assert torch.count_nonzero(out) == 0
    paper = PoseGuider(config.paper_pose_guider())
    assert paper.adds_to_latent and paper(torch.rand(1, 3, 32, 32)).shape == (1, 4, 4, 4)


def test_pose_features_enter_after_conv_in(nets):
    """Released variant: the guider's output is added to conv_in's output, so zero features change nothing."""
    unet, _ = nets
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 1, 16)
    pose = torch.zeros(2, CFG.unet.block_out_channels[0], 8, 8)
    torch.testing.assert_close(unet(x, 5, ctx, pose_features=pose), unet(x, 5, ctx))
    assert not torch.allclose(unet(x, 5, ctx, pose_features=pose + 1), unet(x, 5, ctx))


def test_reference_features_when_the_top_level_has_no_attention():
    """The ReferenceNet stops after the last transformer wherever it sits (here: not in the last up level), and
    still returns one feature per transformer."""
    cfg = replace(STAGE1, block_out_channels=(16, 32, 32), attention_levels=(False, True, False))
    ref = ReferenceNet(cfg)
    feats = ref(torch.randn(1, 4, 8, 8), torch.randn(1, 1, 16))
    assert len(feats) == len(ref.transformers()) == 1 + 1 + 2
    assert ref.unused_parameters()


def test_reference_state_is_the_unet_without_head_and_temporal_layers():
    """`reference_state` of a UNet with temporal layers loads a ReferenceNet strictly (every key used, none
    missing), and the ReferenceNet's weights are the UNet's own tensors."""
    torch.manual_seed(0)
    unet = UNet(CFG.unet)  # with temporal layers
    state = reference_state(unet.state_dict())
    ref = ReferenceNet(CFG.unet)
    ref.load_state_dict(state, strict=True)
    for name, tensor in ref.state_dict().items():
        assert torch.equal(tensor, unet.state_dict()[name]), name
