"""Give a trained model's UNets transformers (and so reference attention) at one more level: the start of a fine-tune.

    python tools/add_attention.py --model weights/demo --level 0 --heads 1 --out runs/demo-att0
    python train.py --stage 1 --model demo --init runs/demo-att0 ... --fast unet.down_blocks.0.attentions \\
        unet.up_blocks.3.attentions reference_net.down_blocks.0.attentions reference_net.up_blocks.3.attentions
    # then stage 2 with --motion weights/demo

The new transformers start as identities (aa.training.attention_level), so the folder samples as --model did until
stage-1 training teaches them to read the reference; --fast gives them a larger learning rate, without which their
zero output layers barely move in a few thousand steps. Every other network is copied unchanged. Writes a native
model folder in fp32. On the demo, 3600 CPU steps of this gave no gain over the same steps without the new level
(docs/demo_training.md, round 8).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as `python tools/add_attention.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aa.training.attention_level import add_attention_level_models  # noqa: E402
from aa.weights.files import WeightsError  # noqa: E402
from aa.weights.native import load_models, save_models  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a native model folder (weights/demo, a checkpoint)")
    p.add_argument("--level", type=int, required=True,
                   help="the UNet level to give transformers, 0 the finest (the latent's own grid)")
    p.add_argument("--heads", type=int,
                   help="attention heads of the new transformers (default: the UNet's); on the CPU fewer, wider "
                        "heads cost much less at a fine level's many tokens")
    p.add_argument("--out", type=Path, required=True, help="the new model folder")
    args = p.parse_args(argv)
    if args.out.resolve() == args.model.resolve():
        p.error("--out must be a new folder, not --model itself")
    try:
        models, sampling = load_models(args.model, dtype=torch.float32)
        grown = add_attention_level_models(models, args.level, args.heads)
    except (WeightsError, ValueError, OSError) as e:
        p.error(str(e))
    save_models(grown, args.out, sampling=sampling)
    print(f"wrote {args.out}: attention levels {models.unet.cfg.attention_levels} -> {grown.unet.cfg.attention_levels}")


if __name__ == "__main__":
    main()
