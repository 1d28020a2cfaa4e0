"""tools/train_vae.py --decoder-only: the encoder (the latent space) stays bit-identical, the decoder trains."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aa import config
from aa.vae import AutoencoderKL
from aa.weights.sd import save_native
from tools import train_vae
from tools.synthetic import write_dataset


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
