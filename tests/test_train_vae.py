"""tools/train_vae.py --decoder-only: the encoder (the latent space) stays bit-identical, the decoder trains."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aa.models import config
from aa.models.config import VAEConfig, build
from aa.models.vae import AutoencoderKL
from aa.synthetic import write_dataset
from aa.training import vae as vae_training
from aa.training.config import TrainConfig
from aa.training.setup import stage1_models
from aa.weights.files import WeightsError
from aa.weights.sd import load_vae, save_native, vae_config_beside
from tools import train_vae


def test_decoder_only_keeps_the_encoder_bit_identical(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Three decoder-only steps from a tiny VAE: encoder and quant_conv tensors equal the start's exactly, the decoder's
    convolutions changed; the before/after reconstruction scores are written; no --init is refused."""
    write_dataset(tmp_path / "data", 32, 32, train_characters=1, val_characters=1, test_characters=1,
                  clips_per_character=1, frames=4, progress=False)
    torch.manual_seed(0)
    save_native(AutoencoderKL(config.tiny().vae), tmp_path / "start.safetensors")
    argv = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--model", "tiny", "--steps", "3",
            "--batch-size", "2", "--crop", "16", "--every", "1", "--eval-every", "2", "--lr", "1e-3"]
    train_vae.main([*argv, "--init", str(tmp_path / "start.safetensors"), "--decoder-only"])
    start, end = load_file(tmp_path / "start.safetensors"), load_file(tmp_path / "run" / "vae.safetensors")
    assert start.keys() == end.keys()
    decoder = {k for k in start if k.startswith(("decoder.", "post_quant_conv."))}
    assert all(torch.equal(start[k], end[k]) for k in start.keys() - decoder)
    assert all(not torch.equal(start[k], end[k]) for k in decoder if k.endswith(("conv_out.weight", "conv_in.weight")))
    scores = json.loads((tmp_path / "run" / "reconstruction.json").read_text())
    assert scores["split"] == "test_chars" and set(scores["before"]) == {"psnr", "ssim"}
    with pytest.raises(SystemExit):
        train_vae.main([*argv, "--decoder-only"])
    assert "--init" in capsys.readouterr().err


def test_a_new_decoder_trains_on_the_same_latents(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--decoder-channels/--decoder-layers: a wider, deeper decoder from scratch behind the start's encoder (bytes
    unchanged), its architecture written to vae_config.json and loadable from it; bad widths are refused."""
    write_dataset(tmp_path / "data", 32, 32, train_characters=1, val_characters=1, test_characters=1,
                  clips_per_character=1, frames=4, progress=False)
    torch.manual_seed(0)
    save_native(AutoencoderKL(config.tiny().vae), tmp_path / "start.safetensors")
    argv = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--model", "tiny", "--steps", "2",
            "--batch-size", "2", "--crop", "16", "--every", "1", "--eval-every", "2", "--init",
            str(tmp_path / "start.safetensors"), "--decoder-only"]
    train_vae.main([*argv, "--decoder-channels", "8,16,16,24", "--decoder-layers", "2"])
    saved = json.loads((tmp_path / "run" / "vae_config.json").read_text())
    cfg = build(VAEConfig, saved)
    assert cfg.decoder_channels == (8, 16, 16, 24) and cfg.decoder_layers == 2
    assert cfg.block_out_channels == config.tiny().vae.block_out_channels
    vae = load_vae(tmp_path / "run" / "vae.safetensors", cfg)
    assert len(vae.decoder.up_blocks[0].resnets) == 3 and vae.decoder.conv_in.out_channels == 24
    start, end = load_file(tmp_path / "start.safetensors"), load_file(tmp_path / "run" / "vae.safetensors")
    encoder = {k for k in start if not k.startswith(("decoder.", "post_quant_conv."))}
    assert all(torch.equal(start[k], end[k]) for k in encoder)
    for bad, message in [("8,16", "as many levels"), ("8,16,16,18", "multiples of norm_groups")]:
        with pytest.raises(SystemExit):
            train_vae.main([*argv, "--decoder-channels", bad])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_vae.main([a for a in argv if a != "--decoder-only"] + ["--decoder-channels", "8,16,16,16"])
    assert "add --decoder-only" in capsys.readouterr().err


def test_latent_crop_pairs_pixels_with_the_latents_above_them() -> None:
    """With "moments" that are the frames average-pooled by 4 (std 0), every crop's latent is exactly its pixels
    average-pooled: the pixel window is the latent window scaled by the frame/latent ratio, for the given frames."""
    g = np.random.default_rng(0)
    frames = g.integers(0, 256, (5, 32, 48, 3), dtype=np.uint8)
    mean = torch.nn.functional.avg_pool2d(vae_training.to_tensor(frames), 4)
    idx = np.array([3, 0, 3])
    pixels, z = vae_training.latent_crop(frames, (mean, torch.zeros_like(mean)), idx, 2, 5, 4)
    assert pixels.shape == (3, 3, 16, 16) and z.shape == (3, 3, 4, 4)
    torch.testing.assert_close(torch.nn.functional.avg_pool2d(pixels, 4), z)
    assert torch.equal(pixels[0], vae_training.to_tensor(frames[3:4, 8:24, 20:36])[0])


def test_a_fresh_vae_of_other_widths_trains_and_stage1_loads_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--channels/--layers: a fresh VAE of other widths, trained on the frames of two dataset folders, recorded in
    vae_config.json; `train.py --vae` builds that architecture from it (not the preset's); bad sizes are refused."""
    for seed, name in enumerate(("a", "b")):
        write_dataset(tmp_path / name, 32, 32, train_characters=1, val_characters=1, test_characters=1,
                      clips_per_character=1, frames=4, seed=seed, progress=False)
    assert len(vae_training.load_frames([tmp_path / "a", tmp_path / "b"], "train", 1)) == 8
    argv = ["--data", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "run"), "--model", "tiny",
            "--steps", "2", "--batch-size", "2", "--crop", "16", "--every", "1", "--eval-every", "2"]
    train_vae.main([*argv, "--channels", "8,16,16,24", "--layers", "2"])
    cfg = build(VAEConfig, json.loads((tmp_path / "run" / "vae_config.json").read_text()))
    assert cfg.block_out_channels == (8, 16, 16, 24) and cfg.layers_per_block == 2
    models = stage1_models(TrainConfig(model="tiny", vae=str(tmp_path / "run" / "vae.safetensors")))
    assert models.vae.cfg == cfg and models.cfg.vae == cfg
    assert len(models.vae.encoder.down_blocks[0].resnets) == 2
    # --init reads the architecture beside the file too: a decoder-only run on that VAE keeps its encoder
    train_vae.main([*argv, "--out", str(tmp_path / "again"), "--steps", "1", "--decoder-only",
                    "--init", str(tmp_path / "run" / "vae.safetensors")])
    assert build(VAEConfig, json.loads((tmp_path / "again" / "vae_config.json").read_text())) == cfg
    # refused in one line before any data is read (the --data folder below does not exist)
    argv[1:3] = [str(tmp_path / "missing")]
    for bad, message in [(["--channels", "8,16"], "needs 4 levels"), (["--channels", "8,16,16,18"], "norm_groups"),
                         (["--layers", "-1"], ">= 0"), (["--layers", "1", "--init", "x.safetensors"], "fresh VAE")]:
        with pytest.raises(SystemExit):
            train_vae.main([*argv, *bad])
        assert message in capsys.readouterr().err


def test_widened_decoder_computes_the_same_function_and_can_train_apart() -> None:
    """widen_decoder(vae, 2): twice the widths, the same images from the same latents (attention included), the
    encoder's own tensors, and copies of a channel that read their inputs with different weights (they train apart)."""
    torch.manual_seed(0)
    vae = AutoencoderKL(config.demo().vae)
    for p in vae.decoder.parameters():  # away from the initialisation's zeros and ones, so every path matters
        p.data += 0.05 * torch.randn_like(p)
    wide = vae_training.widen_decoder(vae, 2, torch.Generator().manual_seed(0))
    assert wide.cfg.decoder_channels == tuple(2 * c for c in vae.cfg.decoder_channels)
    assert wide.encoder is vae.encoder and wide.post_quant_conv is vae.post_quant_conv
    z = torch.randn(2, vae.cfg.latent_channels, 6, 5)
    with torch.no_grad():
        old, new = vae.decoder(z), wide.decoder(z)
    assert old.abs().mean() > 0.1
    torch.testing.assert_close(new, old, atol=2e-4, rtol=1e-4)
    conv = wide.decoder.mid_block.resnets[0].conv1.weight
    assert not torch.allclose(conv[0], conv[1])
    torch.testing.assert_close(conv[0].view(conv.shape[1] // 2, 2, 3, 3).sum(1),
                               vae.decoder.mid_block.resnets[0].conv1.weight[0])


def test_recolour_transforms_whole_frames_independently_and_p0_draws_nothing() -> None:
    """p = 0 returns the frames themselves and leaves the generator untouched (runs without the flag are unchanged);
    p = 1 gives every frame a transform that is one function of the colour (equal pixels stay equal within a
    frame) and different frames different transforms; the input is never written."""
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    frames[:, :4] = (200, 40, 40)
    frames[:, 4:] = (40, 160, 60)
    rng = np.random.default_rng(0)
    assert vae_training.recolour(frames, rng, 0.0) is frames
    assert rng.integers(1 << 30) == np.random.default_rng(0).integers(1 << 30)
    before = frames.copy()
    out = vae_training.recolour(frames, np.random.default_rng(1), 1.0)
    assert np.array_equal(frames, before)
    for f in out:  # one colour per half: the transform depends on the colour only
        assert len(np.unique(f[:4].reshape(-1, 3), axis=0)) == 1 and len(np.unique(f[4:].reshape(-1, 3), axis=0)) == 1
    assert len({tuple(f[0, 0]) for f in out}) == len(out)  # every frame its own transform
    assert not np.array_equal(out[:, 0, 0], frames[:, 0, 0])


@pytest.mark.parametrize("decoder_only", [False, True])
def test_colour_augmented_training_runs_and_bad_probabilities_are_refused(tmp_path: Path, decoder_only: bool,
                                                                        capsys: pytest.CaptureFixture) -> None:
    """--colour-augment trains both ways (decoder-only encodes the recoloured frames at each step: the encoder
    stays bit-identical) and a probability outside [0, 1] is an argparse error."""
    write_dataset(tmp_path / "data", 32, 32, train_characters=1, val_characters=1, test_characters=1,
                  clips_per_character=1, frames=4, progress=False)
    torch.manual_seed(0)
    save_native(AutoencoderKL(config.tiny().vae), tmp_path / "start.safetensors")
    argv = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--model", "tiny", "--steps", "2",
            "--batch-size", "2", "--crop", "16", "--every", "1", "--eval-every", "2"]
    if decoder_only:
        argv += ["--init", str(tmp_path / "start.safetensors"), "--decoder-only"]
    with pytest.raises(SystemExit):
        train_vae.main([*argv, "--colour-augment", "1.5"])
    assert "--colour-augment" in capsys.readouterr().err
    train_vae.main([*argv, "--colour-augment", "1"])
    start, end = load_file(tmp_path / "start.safetensors"), load_file(tmp_path / "run" / "vae.safetensors")
    encoder = [k for k in start if k.startswith(("encoder.", "quant_conv."))]
    assert all(torch.equal(start[k], end[k]) for k in encoder) == decoder_only


def test_a_vae_inside_a_native_model_folder_brings_its_architecture(tmp_path: Path) -> None:
    """The bundled demo's vae.safetensors has no vae_config.json beside it but the folder's config.json: --init and
    --vae read the architecture there (here one the preset doesn't have); a diffusers config.json there (no "model"
    entry) leaves the default, a broken VAE entry is one WeightsError."""
    cfg = config.tiny()
    wide = replace(cfg, vae=replace(cfg.vae, latent_channels=2 * cfg.vae.latent_channels))
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": config.to_dict(wide), "sampling": {}, "paths": {}}))
    assert vae_config_beside(folder / "vae.safetensors", cfg.vae) == wide.vae
    save_native(AutoencoderKL(wide.vae), folder / "vae.safetensors")
    write_dataset(tmp_path / "data", 32, 32, train_characters=1, val_characters=1, test_characters=1,
                  clips_per_character=1, frames=4, progress=False)
    train_vae.main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--model", "tiny", "--steps",
                    "1", "--batch-size", "2", "--crop", "16", "--every", "1", "--eval-every", "2", "--init",
                    str(folder / "vae.safetensors"), "--decoder-only"])
    assert build(VAEConfig, json.loads((tmp_path / "run" / "vae_config.json").read_text())) == wide.vae
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "latent_channels": 4}))
    assert vae_config_beside(folder / "vae.safetensors", cfg.vae) == cfg.vae
    (folder / "config.json").write_text(json.dumps({"model": {"vae": {"latent_chanels": 8}}}))
    with pytest.raises(WeightsError, match="config.json"):
        vae_config_beside(folder / "vae.safetensors", cfg.vae)


def test_latent_noise_is_drawn_per_frame_up_to_its_scale(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """noisy_latents: each frame's noise has its own standard deviation in [0, scale), the spread covering most of
    it; scale 0 leaves the latents alone; --latent-noise reaches the latents of every decoder-only step and is
    refused without --decoder-only."""
    z = torch.zeros(200, 4, 16, 16)
    stds = vae_training.noisy_latents(z, 0.5, np.random.default_rng(0)).flatten(1).std(1)
    assert stds.max() < 0.5 * 1.05 and stds.min() < 0.05 and stds.max() > 0.45
    assert abs(stds.mean().item() - 0.25) < 0.03
    assert vae_training.noisy_latents(z, 0.0, np.random.default_rng(0)) is z
    write_dataset(tmp_path / "data", 32, 32, train_characters=1, val_characters=1, test_characters=1,
                  clips_per_character=1, frames=4, progress=False)
    save_native(AutoencoderKL(config.tiny().vae), tmp_path / "start.safetensors")
    argv = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--model", "tiny", "--steps", "1",
            "--batch-size", "2", "--crop", "16", "--every", "1", "--eval-every", "2", "--latent-noise", "0.3",
            "--init", str(tmp_path / "start.safetensors")]
    with pytest.raises(SystemExit):
        train_vae.main(argv)
    assert "--latent-noise" in capsys.readouterr().err
    scales = []

    def spy(z: torch.Tensor, scale: float, rng: np.random.Generator) -> torch.Tensor:
        scales.append(scale)
        return vae_training.noisy_latents(z, scale, rng)

    monkeypatch.setattr(train_vae, "noisy_latents", spy)
    train_vae.main([*argv, "--steps", "2", "--decoder-only"])
    assert scales == [0.3, 0.3]
