"""Put a fine-tuned VAE decoder into a shipped VAE file without touching its encoder (tools/train_vae.py
--decoder-only; the bundled demo's sharper decoder).

    python tools/pack_vae_decoder.py --decoder runs/vae-dec/vae.safetensors --into weights/demo/vae.safetensors

Tensors under `decoder.` and `post_quant_conv.` come from --decoder, cast to the dtype --into stores them in; every
other tensor (the encoder and quant_conv: the latent space) is copied byte for byte from --into, so every model
trained on its latents still fits. Both files must hold the same keys and shapes. Written atomically.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

DECODER_PREFIXES = ("decoder.", "post_quant_conv.")


def pack_decoder(decoder: str | os.PathLike, into: str | os.PathLike, out: str | os.PathLike | None = None) -> int:
    """Write `out` (default: `into` itself) = `into` with its decoder tensors from `decoder`; returns how many
    tensors were replaced. ValueError if the two files' keys or shapes differ."""
    target, source = load_file(into), load_file(decoder)
    if set(target) != set(source):
        extra, missing = sorted(set(source) - set(target)), sorted(set(target) - set(source))
        raise ValueError(f"{decoder} and {into} hold different tensors: only in the first {extra[:4]}, "
                         f"only in the second {missing[:4]}")
    with safe_open(str(into), "pt") as f:
        metadata = f.metadata()
    replaced = 0
    for key, value in target.items():
        if key.startswith(DECODER_PREFIXES):
            if source[key].shape != value.shape:
                raise ValueError(f"{key}: shape {tuple(source[key].shape)} in {decoder}, {tuple(value.shape)} "
                                 f"in {into}")
            target[key] = source[key].to(value.dtype).contiguous()
            replaced += 1
    out = Path(out if out is not None else into)
    tmp = out.with_name(out.name + ".tmp")
    save_file(target, tmp, metadata=metadata)
    os.chmod(tmp, 0o644)  # safetensors creates 0600
    os.replace(tmp, out)
    return replaced


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decoder", type=Path, required=True, help="VAE file with the fine-tuned decoder")
    p.add_argument("--into", type=Path, required=True, help="VAE file whose encoder stays (rewritten in place)")
    p.add_argument("--out", type=Path, help="write here instead of over --into")
    args = p.parse_args(argv)
    n = pack_decoder(args.decoder, args.into, args.out)
    print(f"wrote {args.out or args.into}: {n} decoder tensors from {args.decoder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
