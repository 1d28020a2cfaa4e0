"""The bundled demo's VAE keeps its latent space: its encoder is the one the demo's networks were trained on
(tools/pack_vae_decoder.py replaces the decoder only)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aa.models import config
from aa.models.config import from_dict, to_dict
from aa.models.vae import AutoencoderKL
from aa.training.vae import save, with_new_decoder
from aa.weights.pack import pack_decoder
from aa.weights.sd import load_vae, save_native

DEMO_VAE = Path(__file__).resolve().parents[1] / "weights" / "demo" / "vae.safetensors"
# sha256 over the sorted names and raw bytes of every tensor outside decoder.* and post_quant_conv.* of the VAE the
# demo's UNet, ReferenceNet and Pose Guider were trained on (round 6's 16-channel latent; rounds 1-5 kept round 1's)
ENCODER_SHA256 = "823521c98e13ab8e4a4a1c2f9f5504b345470426799827a3f27423e162bd4fb6"


def encoder_digest(state: dict[str, torch.Tensor]) -> str:
    """The hash above, of a VAE state dict."""
    h = hashlib.sha256()
    for key in sorted(state):
        if not key.startswith(("decoder.", "post_quant_conv.")):
            h.update(key.encode())
            h.update(state[key].numpy().tobytes())
    return h.hexdigest()


def test_shipped_vae_encoder_is_the_one_the_demo_was_trained_on():
    """The bundled VAE's encoder and quant_conv are byte for byte those the networks were trained on (fp16),
    whatever its decoder is."""
    state = load_file(DEMO_VAE)
    assert {v.dtype for v in state.values()} == {torch.float16}
    assert encoder_digest(state) == ENCODER_SHA256


def test_pack_decoder_replaces_only_the_decoder(tmp_path: Path):
    """pack_decoder takes decoder.* and post_quant_conv.* from the fine-tuned fp32 file, cast to the target's fp16,
    keeps every other tensor's bytes and the file's metadata, and refuses files with different keys."""
    g = torch.Generator().manual_seed(0)
    keys = ["encoder.conv_in.weight", "quant_conv.bias", "post_quant_conv.weight", "decoder.conv_out.bias"]
    shipped = {k: torch.randn(3, 2, generator=g).half() for k in keys}
    tuned = {k: torch.randn(3, 2, generator=g) for k in keys}
    save_file(shipped, tmp_path / "shipped.safetensors", metadata={"format": "aa"})
    save_file(tuned, tmp_path / "tuned.safetensors")
    assert pack_decoder(tmp_path / "tuned.safetensors", tmp_path / "shipped.safetensors", tmp_path / "out") == 2
    out = load_file(tmp_path / "out")
    for k in keys:
        expected = tuned[k].half() if k.startswith(("decoder.", "post_quant_conv.")) else shipped[k]
        assert out[k].dtype == torch.float16 and torch.equal(out[k], expected), k
    assert encoder_digest(out) == encoder_digest(shipped)
    with safe_open(str(tmp_path / "out"), "pt") as f:
        assert f.metadata() == {"format": "aa"}
    save_file({**tuned, "encoder.extra": torch.zeros(1)}, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="different encoder tensors"):
        pack_decoder(tmp_path / "bad.safetensors", tmp_path / "shipped.safetensors", tmp_path / "out2")
    save_file({**tuned, "decoder.extra": torch.zeros(1)}, tmp_path / "wider.safetensors")
    with pytest.raises(ValueError, match="another architecture"):
        pack_decoder(tmp_path / "wider.safetensors", tmp_path / "shipped.safetensors", tmp_path / "out3")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


def test_pack_decoder_of_another_width_records_it_in_the_config(tmp_path: Path):
    """A decoder of other widths and depth (train_vae.py --decoder-channels/--decoder-layers): packed with --config,
    the model config gains its architecture, the packed file loads strictly into it, the encoder bytes stay; packed
    with a config it doesn't fit, nothing is written."""
    cfg = config.tiny()
    torch.manual_seed(0)
    shipped = AutoencoderKL(cfg.vae).half()
    save_native(shipped, tmp_path / "vae.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"model": to_dict(cfg), "sampling": {}}))
    wide = with_new_decoder(AutoencoderKL(cfg.vae), (16, 24, 24, 32), 2)
    (tmp_path / "run").mkdir()
    save(wide, tmp_path / "run")
    digest = encoder_digest(load_file(tmp_path / "vae.safetensors"))
    pack_decoder(tmp_path / "run" / "vae.safetensors", tmp_path / "vae.safetensors", config=tmp_path / "config.json")
    model = from_dict(json.loads((tmp_path / "config.json").read_text())["model"])
    assert model.vae.decoder_channels == (16, 24, 24, 32) and model.vae.decoder_layers == 2
    assert model.vae.block_out_channels == cfg.vae.block_out_channels
    vae = load_vae(tmp_path / "vae.safetensors", model.vae)
    assert encoder_digest(load_file(tmp_path / "vae.safetensors")) == digest
    assert torch.equal(vae.decoder.conv_out.weight, wide.decoder.conv_out.weight.half())
    before = (tmp_path / "config.json").read_bytes(), (tmp_path / "vae.safetensors").read_bytes()
    (tmp_path / "run" / "vae_config.json").write_text(json.dumps(asdict(replace(cfg.vae, decoder_layers_per_block=1))))
    with pytest.raises(ValueError, match="don't fit"):
        pack_decoder(tmp_path / "run" / "vae.safetensors", tmp_path / "vae.safetensors",
                     config=tmp_path / "config.json")
    assert ((tmp_path / "config.json").read_bytes(), (tmp_path / "vae.safetensors").read_bytes()) == before
