"""Put a fine-tuned or new VAE decoder (tools/train_vae.py --decoder-only) into a shipped VAE file without touching
its encoder.

    python tools/pack_vae_decoder.py --decoder runs/vae-dec/vae.safetensors --into weights/demo/vae.safetensors
    python tools/pack_vae_decoder.py --decoder runs/vae-wide/vae.safetensors --into weights/demo/vae.safetensors \\
        --config weights/demo/config.json          # a decoder of other widths: the model config records them

Tensors under `decoder.` and `post_quant_conv.` come from --decoder, cast to the dtype --into stores them in; every
other tensor (the encoder and quant_conv: the latent space) is copied byte for byte from --into, so every model
trained on its latents still fits. The two files must hold the same encoder tensors. If the decoder's tensors differ
in names or shapes (train_vae.py --decoder-channels/--decoder-layers), its architecture is read from the
vae_config.json beside --decoder and written into --config's model.vae; the result is checked against that
architecture before anything is written. Every file is written atomically.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/pack_vae_decoder.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aa.weights.pack import pack_decoder  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decoder", type=Path, required=True, help="VAE file with the fine-tuned decoder")
    p.add_argument("--into", type=Path, required=True, help="VAE file whose encoder stays (rewritten in place)")
    p.add_argument("--out", type=Path, help="write here instead of over --into")
    p.add_argument("--config", type=Path, help="model config.json to record a new decoder architecture in "
                                                "(rewritten in place)")
    args = p.parse_args(argv)
    try:
        n = pack_decoder(args.decoder, args.into, args.out, args.config)
    except (ValueError, OSError, KeyError) as e:
        p.error(str(e))
    print(f"wrote {args.out or args.into}: {n} decoder tensors from {args.decoder}"
          + (f"; {args.config} records the decoder's architecture" if args.config else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
