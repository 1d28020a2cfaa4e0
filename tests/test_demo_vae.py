"""The bundled demo's VAE keeps its latent space: its encoder is the one the demo's networks were trained on
(tools/pack_vae_decoder.py replaces the decoder only)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tools.pack_vae_decoder import pack_decoder

DEMO_VAE = Path(__file__).resolve().parents[1] / "weights" / "demo" / "vae.safetensors"
# sha256 over the sorted names and raw bytes of every tensor outside decoder.* and post_quant_conv.* of the VAE the
# demo's UNet, ReferenceNet and Pose Guider were trained on (commit ec445fc, kept by round 2)
ENCODER_SHA256 = "e4d59185876c5a0030fe430599eb8f7ae87674cbbeeae8b1fc9eca386c5d0f16"


def encoder_digest(state: dict[str, torch.Tensor]) -> str:
    """The hash above, of a VAE state dict."""
    h = hashlib.sha256()
    for key in sorted(state):
        if not key.startswith(("decoder.", "post_quant_conv.")):
            h.update(key.encode())
            h.update(state[key].numpy().tobytes())
    return h.hexdigest()


def test_shipped_vae_encoder_is_the_one_the_demo_was_trained_on():
    """The bundled VAE's encoder and quant_conv are byte for byte round 1's (fp16), whatever its decoder is."""
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
    save_file({**tuned, "decoder.extra": torch.zeros(1)}, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="different tensors"):
        pack_decoder(tmp_path / "bad.safetensors", tmp_path / "shipped.safetensors", tmp_path / "out2")
