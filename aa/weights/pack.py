"""A VAE decoder put into a shipped VAE file without touching its encoder (tools/pack_vae_decoder.py is its command
line): decoder.* and post_quant_conv.* from the new file, every other tensor (the latent space) byte for byte from
the old one; a decoder of other widths has its architecture recorded in the model's config.json. Atomic writes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aa.models.config import VAEConfig, build
from aa.models.vae import DECODER_PREFIXES, AutoencoderKL

DECODER_FIELDS = ("decoder_block_out_channels", "decoder_layers_per_block")


def shapes(state: dict[str, torch.Tensor], decoder: bool) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the decoder's tensors (decoder=True) or of everything else."""
    return {k: tuple(v.shape) for k, v in state.items() if k.startswith(DECODER_PREFIXES) == decoder}


def write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.chmod(tmp, 0o644)  # safetensors creates 0600
    os.replace(tmp, path)


def pack_decoder(decoder: str | os.PathLike, into: str | os.PathLike, out: str | os.PathLike | None = None,
                 config: str | os.PathLike | None = None) -> int:
    """Write `out` (default: `into` itself) = `into` with its decoder tensors from `decoder`; returns how many
    tensors came from `decoder`. A decoder of another architecture needs `config` (a model config.json, rewritten
    with the architecture from the vae_config.json beside `decoder`). ValueError, before anything is written, if
    the encoder tensors differ, or the architecture changed without `config`, or the packed tensors don't match it."""
    target, source = load_file(into), load_file(decoder)
    if shapes(target, False) != shapes(source, False):
        a, b = shapes(source, False), shapes(target, False)
        diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        raise ValueError(f"{decoder} and {into} hold different encoder tensors (names or shapes): {diff[:4]}")
    new_architecture = shapes(target, True) != shapes(source, True)
    if new_architecture and config is None:
        raise ValueError(f"the decoder in {decoder} has other tensors than {into}'s (another architecture): pass "
                         f"--config with the model config.json to record it in")
    with safe_open(str(into), "pt") as f:
        metadata = f.metadata()
    dtype = next(v.dtype for k, v in target.items() if k.startswith(DECODER_PREFIXES))
    packed = {k: v for k, v in target.items() if not k.startswith(DECODER_PREFIXES)}
    packed.update({k: v.to(dtype).contiguous() for k, v in source.items() if k.startswith(DECODER_PREFIXES)})
    model_config = None
    if config is not None:
        model_config = json.loads(Path(config).read_text())
        trained = json.loads((Path(decoder).parent / "vae_config.json").read_text())
        vae = {**model_config["model"]["vae"], **{k: trained.get(k) for k in DECODER_FIELDS}}
        cfg = build(VAEConfig, vae)
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in AutoencoderKL(cfg).state_dict().items()}
        if expected != {k: tuple(v.shape) for k, v in packed.items()}:
            raise ValueError(f"the packed tensors don't fit the VAE of {config} with the decoder of "
                             f"{Path(decoder).parent / 'vae_config.json'} ({cfg})")
        model_config["model"]["vae"] = vae
    out = Path(out if out is not None else into)
    write_atomic(out, lambda tmp: save_file(packed, tmp, metadata=metadata))
    if model_config is not None:
        write_atomic(Path(config), lambda tmp: tmp.write_text(json.dumps(model_config, indent=2) + "\n"))
    return sum(k.startswith(DECODER_PREFIXES) for k in source)
