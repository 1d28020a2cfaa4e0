"""A wider latent space for a trained model (aa.training.latent, tools/widen_latent.py, train_vae --widen-latent):
the widened networks compute what the old ones did on the old channels, and the folder trains in both stages."""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from aa.models import config
from aa.models.vae import AutoencoderKL
from aa.synthetic import write_dataset
from aa.training.config import TrainConfig
from aa.training.latent import match_new_channels, widen_models, widen_vae
from aa.training.setup import build_models
from aa.weights.native import load_models, save_models
from aa.weights.sd import load_vae, save_native, vae_config_beside
from tests.helpers import tiny_random_unets
from tools import train_vae, widen_latent


def test_widened_vae_keeps_the_old_channels_and_decodes_as_before() -> None:
    """The old channels' posterior moments are the old VAE's exactly; the decoder ignores the new channels
    whatever they hold; the new means vary with the image and the new log-variances start at the given value."""
    torch.manual_seed(0)
    vae = AutoencoderKL(config.tiny().vae)
    old = vae.cfg.latent_channels
    wide = widen_vae(vae, old + 3, init_logvar=-7.0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        q, q_wide = vae.posterior(x), wide.posterior(x)
        assert torch.equal(q_wide.mean[:, :old], q.mean) and torch.equal(q_wide.logvar[:, :old], q.logvar)
        assert torch.equal(q_wide.logvar[:, old:], torch.full_like(q_wide.logvar[:, old:], -7.0))
        assert q_wide.mean[:, old:].std() > 0.01
        z = torch.randn(2, old + 3, 8, 8)
        torch.testing.assert_close(wide.decode(z), vae.decode(z[:, :old]), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="more than"):
        widen_vae(vae, old)


def test_new_channels_are_rescaled_to_the_old_spread_without_changing_the_output() -> None:
    """match_new_channels: afterwards every new channel's posterior-mean std equals the old channels' mean std, the
    old channels are untouched, the reconstruction is the same and the new log-variances are the old ones' mean."""
    torch.manual_seed(0)
    vae = AutoencoderKL(config.tiny().vae)
    old = vae.cfg.latent_channels
    wide = widen_vae(vae, old + 3)
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        before, q_before = wide(x), wide.posterior(x)
        scale = match_new_channels(wide, old, x)
        q = wide.posterior(x)
        std = q.mean.std(dim=(0, 2, 3))
        torch.testing.assert_close(std[old:], std[:old].mean().expand(3), rtol=1e-4, atol=0)
        assert torch.equal(q.mean[:, :old], q_before.mean[:, :old]) and (scale[old:] != 1).all()
        torch.testing.assert_close(q.logvar[:, old:], q_before.logvar[:, :old].mean().expand_as(q.logvar[:, old:]))
        torch.testing.assert_close(wide(x), before, rtol=0, atol=1e-5)


def test_widened_unets_compute_the_same_on_the_old_channels() -> None:
    """Whatever the new latent channels hold, the widened UNet's old outputs equal the old UNet's, its new outputs
    are zero, and the ReferenceNet's features are unchanged; a VAE of another downscale is refused."""
    models = tiny_random_unets(motion=False)
    old = models.vae.cfg.latent_channels
    wide = widen_models(models, widen_vae(models.vae, old + 4))
    assert wide.cfg.unet.in_channels == wide.cfg.unet.out_channels == old + 4 == wide.cfg.vae.latent_channels
    z = torch.randn(2, old + 4, 8, 8)
    context = torch.randn(2, 1, models.unet.cfg.context_dim)
    with torch.no_grad():
        out, out_wide = models.unet(z[:, :old], 500, context), wide.unet(z, 500, context)
        torch.testing.assert_close(out_wide[:, :old], out, rtol=0, atol=1e-5)
        assert torch.equal(out_wide[:, old:], torch.zeros_like(out_wide[:, old:]))
        assert out.abs().mean() > 1e-3
        for a, b in zip(models.reference_net(z[:, :old], context), wide.reference_net(z, context), strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    coarser = AutoencoderKL(replace(models.vae.cfg, latent_channels=old + 4,
                                    block_out_channels=(*models.vae.cfg.block_out_channels, 32)))
    with pytest.raises(ValueError, match="downscales"):
        widen_models(models, coarser)


def old_channel_drift(run: Path, start: Path, frames: torch.Tensor, old: int) -> float:
    """How far the trained VAE's old-channel posterior means moved from the start VAE's, mean squared."""
    trained = load_vae(run / "vae.safetensors", vae_config_beside(run / "vae.safetensors", config.tiny().vae))
    before = load_vae(start, config.tiny().vae)
    with torch.no_grad():
        return (trained.posterior(frames).mean[:, :old] - before.posterior(frames).mean).pow(2).mean().item()


def test_train_vae_widens_and_the_anchor_holds_the_old_channels(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """--widen-latent trains a VAE with more channels (recorded in vae_config.json); with a strong --anchor the
    old channels' means move less than without; misuse is refused in one line."""
    write_dataset(tmp_path / "data", 32, 32, train_characters=1, val_characters=1, test_characters=1,
                  clips_per_character=1, frames=4, progress=False)
    torch.manual_seed(0)
    vae = AutoencoderKL(config.tiny().vae)
    save_native(vae, tmp_path / "start.safetensors")
    old = vae.cfg.latent_channels
    argv = ["--data", str(tmp_path / "data"), "--model", "tiny", "--steps", "10", "--batch-size", "2", "--crop",
            "16", "--every", "1", "--eval-every", "2", "--lr", "3e-3", "--init", str(tmp_path / "start.safetensors"),
            "--widen-latent", str(old + 4)]
    train_vae.main([*argv, "--out", str(tmp_path / "free")])
    train_vae.main([*argv, "--out", str(tmp_path / "anchored"), "--anchor", "10000"])
    wide = load_vae(tmp_path / "free" / "vae.safetensors",
                    vae_config_beside(tmp_path / "free" / "vae.safetensors", vae.cfg))
    assert wide.cfg.latent_channels == old + 4
    frames = torch.rand(4, 3, 32, 32) * 2 - 1
    free = old_channel_drift(tmp_path / "free", tmp_path / "start.safetensors", frames, old)
    anchored = old_channel_drift(tmp_path / "anchored", tmp_path / "start.safetensors", frames, old)
    assert anchored < 0.5 * free, (anchored, free)
    for bad, message in [(["--decoder-only"], "excludes"), (["--widen-latent", str(old)], "more than")]:
        with pytest.raises(SystemExit):
            train_vae.main([*argv, "--out", str(tmp_path / "bad"), *bad])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_vae.main([a for a in argv if a not in ("--widen-latent", str(old + 4))]
                       + ["--out", str(tmp_path / "bad"), "--anchor", "1"])
    assert "add --widen-latent" in capsys.readouterr().err


def test_widened_folder_trains_in_both_stages(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """tools/widen_latent.py writes a folder that stage 1 loads (--init) with the VAE's channels everywhere; stage 2
    takes the temporal layers of the narrower model it came from (--motion); a VAE that doesn't fit is refused."""
    models = tiny_random_unets(motion=True)
    save_models(models, tmp_path / "model")
    old = models.vae.cfg.latent_channels
    wide_vae = widen_vae(models.vae, old + 4)
    save_native(wide_vae, tmp_path / "vae" / "vae.safetensors")
    (tmp_path / "vae" / "vae_config.json").write_text(json.dumps(asdict(wide_vae.cfg)))
    write_dataset(tmp_path / "data", 32, 32, train_characters=1, val_characters=1, test_characters=0,
                  clips_per_character=1, frames=4, progress=False)
    widen_latent.main(["--model", str(tmp_path / "model"), "--vae", str(tmp_path / "vae" / "vae.safetensors"),
                       "--out", str(tmp_path / "wide"), "--data", str(tmp_path / "data")])
    loaded, _ = load_models(tmp_path / "wide")
    assert loaded.unet.cfg.in_channels == loaded.reference_net.cfg.in_channels == old + 4
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():  # rescaled new channels (--data), the same reconstruction
        assert not torch.equal(loaded.vae.quant_conv.weight, wide_vae.quant_conv.weight)
        torch.testing.assert_close(loaded.vae(x), wide_vae(x), rtol=0, atol=1e-5)
    stage1, _ = build_models(TrainConfig(stage=1, model="tiny", init=str(tmp_path / "wide")))
    assert stage1.unet.cfg.out_channels == old + 4 and stage1.unet.cfg.motion is None
    save_models(stage1, tmp_path / "stage1")
    stage2, names = build_models(TrainConfig(stage=2, model="tiny", stage1=str(tmp_path / "stage1"),
                                             motion=str(tmp_path / "model")))
    expected = {k: v for k, v in models.unet.state_dict().items() if ".motion_modules." in k}
    trained = {k: p for k, p in stage2.unet.named_parameters() if p.requires_grad}
    assert names == ("unet",) and trained.keys() == expected.keys()
    assert stage2.unet.cfg.in_channels == old + 4
    with pytest.raises(SystemExit):
        widen_latent.main(["--model", str(tmp_path / "model"), "--vae", str(tmp_path / "model" / "vae.safetensors"),
                           "--out", str(tmp_path / "same")])
    assert "more than" in capsys.readouterr().err
