"""Training memory at full size without the hardware: build a stage's networks on the `meta` device, run real
training steps of `aa.training.loop.Trainer` (forward, backward, clipping, AdamW) on meta tensors, and print the peak
of live tensor bytes by category (aa/eval/memory.py).

    python tools/estimate_train_memory.py --stage 1 --batch-size 4 --mixed-precision bf16 --gradient-checkpointing
    python tools/estimate_train_memory.py --stage 2 --frames 24 --mixed-precision bf16 --gradient-checkpointing \\
        --frozen-dtype bf16 --optimizer fused
    python tools/estimate_train_memory.py --table        # the README's table (stage 1 and 2, with each option)

What a CUDA device does is emulated (aa.eval.memory.Emulate): fused attention, autocast's casts. DDP's gradient buckets
are added from the gradient bytes (one process cannot run DDP on meta); FSDP is not estimated. Not counted: CUDA
context (~0.4 GB), kernel workspaces, the caching allocator's rounding and fragmentation (typically 5-15% on top).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aa.eval.train_memory import report  # noqa: E402
from aa.models.config import ARCHITECTURES  # noqa: E402
from aa.training import loop  # noqa: E402
from aa.training.config import AMP, DTYPES, STAGES, TrainConfig  # noqa: E402

OPTIONS = ("", "ckpt", "ckpt bf16", "ckpt bf16 frozen", "ckpt bf16 frozen fused")  # each adds one option
TABLE = [  # (stage, batch, frames, options), the README's table
    *[(1, b, 1, opts) for b in (1, 4) for opts in OPTIONS],
    *[(2, 1, f, opts) for f in (16, 24) for opts in OPTIONS],
]


def table_row(stage: int, batch_size: int, frames: int, opts: str, ddp: str) -> dict[str, float]:
    """One row of the table: options are words, 'ckpt' (gradient checkpointing), 'bf16' (autocast), 'frozen' (frozen
    weights in bf16), 'fused' (fused AdamW; else CUDA's default foreach)."""
    words = opts.split()
    cfg = TrainConfig(stage=stage, batch_size=batch_size, frames=frames, gradient_checkpointing="ckpt" in words,
                      mixed_precision="bf16" if "bf16" in words else "no")
    return report(cfg, "fused" if "fused" in words else "foreach", "bf16" if "frozen" in words else "fp32", ddp)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", type=int, default=1, choices=STAGES, help="1: single frames, 2: clips (default: 1)")
    p.add_argument("--model", default="sd15", choices=sorted(ARCHITECTURES), help="architecture preset (default: sd15)")
    p.add_argument("--width", type=int, default=512, help="training width in pixels (default: 512)")
    p.add_argument("--height", type=int, default=512, help="training height in pixels (default: 512)")
    p.add_argument("--batch-size", type=int, default=1, help="videos per micro-batch (default: 1)")
    p.add_argument("--frames", type=int, default=24, help="stage 2: frames per clip (default: 24)")
    p.add_argument("--mixed-precision", default="no", choices=sorted(AMP), help="autocast dtype (default: no)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute UNet activations in backward")
    p.add_argument("--frozen-dtype", default="fp32", choices=sorted(DTYPES),
                   help="dtype the frozen weights are stored in (train.py --frozen-dtype; default: fp32)")
    p.add_argument("--optimizer", default="fused", choices=["foreach", "fused", "single"],
                   help="AdamW implementation: 'fused' (what train.py uses on CUDA; the default), 'foreach' "
                        "(torch's default on CUDA), or per-tensor 'single'")
    p.add_argument("--ddp", default="no", choices=["no", "buckets", "view"],
                   help="add DDP's gradient buckets: 'buckets' (a copy), 'view' (gradient_as_bucket_view)")
    p.add_argument("--no-reference", action="store_true", help="the no-ReferenceNet ablation")
    p.add_argument("--encode-chunk", type=int, default=loop.ENCODE_CHUNK,
                   help=f"frames per VAE encoder call (default: the training code's {loop.ENCODE_CHUNK}; 0: all "
                        "frames in one call, as before)")
    p.add_argument("--table", action="store_true", help="print the README's table (stage 1 and 2, each option)")
    args = p.parse_args(argv)
    loop.ENCODE_CHUNK = args.encode_chunk or 1 << 30  # Trainer.loss reads it at every call
    if args.table:
        print("| stage | size | frames | batch | options | weights | grads | optimizer | activations | total GB |")
        print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|")
        for stage, batch_size, frames, opts in TABLE:
            r = table_row(stage, batch_size, frames, opts, args.ddp)
            print(f"| {stage} | 512x512 | {frames} | {batch_size} | {opts or 'none'} | {r['weights']:.1f} | "
                  f"{r['gradients']:.1f} | {r['optimizer']:.1f} | {r['activations'] + r['data']:.1f} | "
                  f"{r['total']:.1f} |", flush=True)
        return 0
    cfg = TrainConfig(stage=args.stage, model=args.model, width=args.width, height=args.height,
                      batch_size=args.batch_size, frames=args.frames, mixed_precision=args.mixed_precision,
                      gradient_checkpointing=args.gradient_checkpointing, reference=not args.no_reference)
    r = report(cfg, args.optimizer, args.frozen_dtype, args.ddp)
    for name, value in r.items():
        print(f"{name:>12}  {value:7.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
