"""Reference attention at one more UNet level (aa.training.attention_level, tools/add_attention.py): the grown
networks compute what the old ones did, the new blocks learn, and the folder trains in both stages."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from aa.models.bundle import Models
from aa.training.attention_level import add_attention_level, add_attention_level_models
from aa.training.config import TrainConfig
from aa.training.setup import build_models
from aa.weights.native import load_models, save_models
from tests.helpers import tiny_random_unets
from tools import add_attention

FRAMES = 2


def denoise(models: Models, z: torch.Tensor, reference: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The denoising UNet on (b f) latents, attending to the ReferenceNet's features of `reference` (b, c, h, w)."""
    ref_kv = models.unet.reference_kv(models.reference_net(reference, context))
    return models.unet(z, 500, context, ref_kv=ref_kv, num_frames=FRAMES)


def test_grown_unets_compute_what_the_old_ones_did() -> None:
    """With transformers added at level 1 (down and its mirrored up level, in both UNets, with their own head
    count), the video prediction through the reference is the old one, the old reference features are still there
    in their order, and the only new parameters are the new transformers'."""
    models = tiny_random_unets(motion=True)
    grown = add_attention_level_models(models, 1, heads=1)
    assert grown.cfg.unet.attention_levels == grown.unet.cfg.attention_levels == (True, True)
    assert grown.cfg.unet.num_heads == (2, 1)
    heads = [[t.transformer_blocks[0].attn1.heads for t in level.attentions]
             for level in [*grown.unet.down_blocks, grown.unet.mid_block, *grown.unet.up_blocks]]
    assert heads == [[2], [1], [1], [1, 1], [2, 2]]  # down 0, down 1, mid (the last level's), up 1, up 0
    assert grown.reference_net.cfg.attention_levels == (True, True) and grown.unet.cfg.motion is not None
    old_keys, new_keys = set(models.unet.state_dict()), set(grown.unet.state_dict())
    assert old_keys < new_keys
    assert {k.split(".attentions.")[0] for k in new_keys - old_keys} == {"down_blocks.1", "up_blocks.0"}
    c = models.unet.cfg.in_channels
    z, reference = torch.randn(2 * FRAMES, c, 8, 8), torch.randn(2, c, 8, 8)
    context = torch.randn(2, 1, models.unet.cfg.context_dim)
    with torch.no_grad():
        out = denoise(models, z, reference, context)
        torch.testing.assert_close(denoise(grown, z, reference, context), out, rtol=0, atol=1e-5)
        assert out.abs().mean() > 1e-3
        old, new = models.reference_net(reference, context), grown.reference_net(reference, context)
        assert len(new) == len(old) + 3  # one new block down, two up (layers_per_block + 1)
        kept = [new[0], new[2]] + new[-len(old) + 2:]  # down 0, mid, up level 1: where the old blocks run
        for a, b in zip(old, kept, strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


def test_new_blocks_learn_to_read_the_reference() -> None:
    """The new blocks start as identities but not dead ones: one training step's gradient reaches their output
    projections, and after a step on them alone the prediction depends on the reference through them."""
    grown = add_attention_level_models(tiny_random_unets(motion=True), 1)
    new_blocks = [*grown.unet.down_blocks[1].attentions, *grown.unet.up_blocks[0].attentions]
    c = grown.unet.cfg.in_channels
    z, reference = torch.randn(2 * FRAMES, c, 8, 8), torch.randn(2, c, 8, 8)
    context = torch.randn(2, 1, grown.unet.cfg.context_dim)
    before = denoise(grown, z, reference, context).detach()
    denoise(grown, z, reference, context).pow(2).mean().backward()
    for block in new_blocks:
        assert block.proj_out.weight.grad.abs().sum() > 0
    with torch.no_grad():
        for block in new_blocks:
            block.proj_out.weight -= 10 * block.proj_out.weight.grad
        assert (denoise(grown, z, reference, context) - before).abs().max() > 1e-4


def test_a_level_with_transformers_out_of_range_or_bad_heads_is_refused() -> None:
    """Level 0 of the tiny UNet already has transformers; it has no level 2; 3 heads don't divide 64 channels; a
    head count per level needs one count for every level."""
    unet = tiny_random_unets(motion=True).unet
    with pytest.raises(ValueError, match="already has transformers"):
        add_attention_level(unet, 0)
    with pytest.raises(ValueError, match="levels 0 to 1"):
        add_attention_level(unet, 2)
    with pytest.raises(ValueError, match="3 heads"):
        add_attention_level(unet, 1, heads=3)
    with pytest.raises(ValueError, match="one count per level"):
        replace(unet.cfg, num_heads=(2, 2, 2))


def test_grown_folder_trains_in_both_stages(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """tools/add_attention.py writes a folder that stage 1 loads (--init) with the new attention levels; stage 2
    takes the temporal layers of the model it came from (--motion); a level that has transformers is refused in
    one line."""
    models = tiny_random_unets(motion=True)
    save_models(models, tmp_path / "model")
    add_attention.main(["--model", str(tmp_path / "model"), "--level", "1", "--heads", "4",
                        "--out", str(tmp_path / "grown")])
    loaded, _ = load_models(tmp_path / "grown")
    assert loaded.unet.cfg.attention_levels == loaded.reference_net.cfg.attention_levels == (True, True)
    assert loaded.unet.cfg.num_heads == loaded.reference_net.cfg.num_heads == (2, 4)
    stage1, _ = build_models(TrainConfig(stage=1, model="tiny", init=str(tmp_path / "grown")))
    assert stage1.unet.cfg.attention_levels == (True, True) and stage1.unet.cfg.motion is None
    assert stage1.unet.up_blocks[0].attentions[1].transformer_blocks[0].attn1.heads == 4
    save_models(stage1, tmp_path / "stage1")
    stage2, names = build_models(TrainConfig(stage=2, model="tiny", stage1=str(tmp_path / "stage1"),
                                             motion=str(tmp_path / "model")))
    expected = {k: v for k, v in models.unet.state_dict().items() if ".motion_modules." in k}
    assert names == ("unet",)
    for k, v in stage2.unet.state_dict().items():
        if ".motion_modules." in k:
            assert torch.equal(v, expected.pop(k)), k
    assert not expected
    with pytest.raises(SystemExit):
        add_attention.main(["--model", str(tmp_path / "model"), "--level", "0", "--out", str(tmp_path / "bad")])
    assert "already has transformers" in capsys.readouterr().err
