"""Training memory at full size without the hardware: build a stage's networks on the `meta` device, run real
training steps of `aa.training.loop.Trainer` (forward, backward, clipping, AdamW) on meta tensors, and print the peak
of live tensor bytes by category (aa/memory.py).

    python tools/estimate_train_memory.py --stage 1 --batch-size 4 --mixed-precision bf16 --gradient-checkpointing
    python tools/estimate_train_memory.py --stage 2 --frames 24 --mixed-precision bf16 --gradient-checkpointing \\
        --frozen-dtype bf16 --optimizer fused
    python tools/estimate_train_memory.py --table        # the README's table (stage 1 and 2, with each option)

What a CUDA device does is emulated (aa.memory.Emulate): fused attention, autocast's casts. DDP's gradient buckets
are added from the gradient bytes (one process cannot run DDP on meta); FSDP is not estimated. Not counted: CUDA
context (~0.4 GB), kernel workspaces, the caching allocator's rounding and fragmentation (typically 5-15% on top).
"""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aa.unet  # noqa: E402
from aa.memory import Emulate, MemoryTracker, gb, nbytes  # noqa: E402
from aa.models import Models  # noqa: E402
from aa.training import loop  # noqa: E402
from aa.training.loop import AMP, TrainConfig, Trainer  # noqa: E402
from aa.training.setup import PRESETS, set_trainable  # noqa: E402

CATEGORIES = ("weights", "gradients", "optimizer", "data", "activations")


def build(cfg: TrainConfig, device: str | torch.device = "meta") -> Models:
    """The networks of a stage with random weights (stage 1: no temporal layers), requires_grad set as training."""
    model_cfg = PRESETS[cfg.model]()
    if cfg.stage == 1:
        model_cfg = replace(model_cfg, unet=replace(model_cfg.unet, motion=None))
    with torch.device(device):
        models = Models.build(model_cfg)
    set_trainable(models, cfg.stage, cfg.reference, cfg.train_image_encoder)
    return models


def batch(cfg: TrainConfig, models: Models, device: str | torch.device, step: int) -> tuple[list[int], dict]:
    """A micro-batch shaped like `PoseVideoDataset`'s, with its seeds, on `device` (random values: only shapes
    matter here)."""
    b, f, h, w, s = cfg.batch_size, cfg.clip_frames, cfg.height, cfg.width, models.image_encoder.cfg.image_size
    g = torch.Generator().manual_seed(step)
    images = {"target": torch.rand(b, f, 3, h, w, generator=g) * 2 - 1,
              "pose": torch.rand(b, f, 3, h, w, generator=g),
              "reference": torch.rand(b, 3, h, w, generator=g) * 2 - 1,
              "clip": torch.randn(b, 3, s, s, generator=g)}
    return list(range(step * b, (step + 1) * b)), {name: x.to(device) for name, x in images.items()}


@contextmanager
def checkpoint_autocast(emulate: Emulate) -> Iterator[None]:
    """Gradient checkpointing recomputes in backward, where the emulation is off (a function mode is off inside its
    own handler, here of `backward`), under the forward's autocast state (torch.utils.checkpoint restores it for
    torch.autocast, not for the emulated one): wrap the UNet's checkpoint calls to restore both."""
    original = aa.unet.checkpoint

    def wrapped(fn, *args, **kwargs):
        dtype = emulate.dtype

        def run(*a):
            with emulate if torch._C._len_torch_function_stack() == 0 else nullcontext(), emulate.autocast(dtype):
                return fn(*a)
        return original(run, *args, **kwargs)

    aa.unet.checkpoint = wrapped
    try:
        yield
    finally:
        aa.unet.checkpoint = original


def measure(cfg: TrainConfig, device: str = "meta", emulate: str = "cuda", optimizer: str = "foreach",
            frozen_dtype: str = "fp32", steps: int = 2) -> tuple[MemoryTracker, int]:
    """Peak live tensor bytes of `steps` training steps (the second has the optimizer states: the peak) by category.

    device 'meta' estimates; 'cpu' runs the same steps for real (the test compares the two). optimizer: 'foreach'
    (CUDA's default AdamW: one temporary the size of all trained weights), 'fused' (no temporaries; run as the
    per-tensor AdamW, whose temporaries are one tensor at a time), 'single' (the per-tensor AdamW). Returns the
    tracker and the bytes of the trained parameters (DDP's gradient buckets hold as many)."""
    cfg = replace(cfg, uncond_rate=0.0)  # every video conditional: the ReferenceNet runs for all, the worst case
    amp = AMP[cfg.mixed_precision]
    models = build(cfg, device)
    emu = Emulate(emulate)
    dev = torch.device(device)
    with MemoryTracker() as mem, emu:
        nets = models.modules().values()
        mem.track([t for net in nets for t in (*net.parameters(), *net.buffers())], "weights")
        with mem.category("weights"):  # frozen weights cast to --frozen-dtype, the loss's schedule buffer
            trainer = Trainer(models, replace(cfg, mixed_precision="no", frozen_dtype=frozen_dtype), 1, dev)
        trainer.optimizer = torch.optim.AdamW(trainer.params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                              foreach=optimizer == "foreach")
        trainer.schedule = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda step: 1.0)
        trainer.optimizer.register_step_pre_hook(lambda *_: setattr(mem, "current", "optimizer"))
        trainer.optimizer.register_step_post_hook(lambda *_: setattr(mem, "current", "activations"))
        mem.track_gradients(trainer.params)
        if amp is not None and dev.type == "meta":
            trainer.autocast = emu.autocast(amp)
        elif amp is not None:
            trainer.autocast = torch.autocast(dev.type, dtype=amp)
        with checkpoint_autocast(emu):
            for k in range(steps):  # one batch on the device at a time, as in training
                with mem.category("data"):
                    micro = batch(cfg, models, dev, k)
                trainer.step(iter([micro]))
                del micro
    return mem, nbytes(trainer.params)


def report(cfg: TrainConfig, optimizer: str, frozen_dtype: str, ddp: str) -> dict[str, float]:
    """GiB by category at the peak, DDP's buckets added ('no': one process; 'buckets': DDP as it was, a second
    copy of the gradients; 'view': gradient_as_bucket_view, the gradients live in the buckets all the time)."""
    mem, trained = measure(cfg, optimizer=optimizer, frozen_dtype=frozen_dtype)
    out = {k: gb(mem.peak_by_category.get(k, 0)) for k in CATEGORIES}
    if ddp == "buckets":
        out["ddp buckets"] = gb(trained)
    elif ddp == "view":  # the gradients' bytes are there at the peak whether backward has reached them or not
        out["ddp buckets"] = gb(trained - mem.peak_by_category.get("gradients", 0))
    out["total"] = sum(out.values())
    return out


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
    p.add_argument("--stage", type=int, default=1, choices=[1, 2], help="1: single frames, 2: clips (default: 1)")
    p.add_argument("--model", default="sd15", choices=sorted(PRESETS), help="architecture preset (default: sd15)")
    p.add_argument("--width", type=int, default=512, help="training width in pixels (default: 512)")
    p.add_argument("--height", type=int, default=512, help="training height in pixels (default: 512)")
    p.add_argument("--batch-size", type=int, default=1, help="videos per micro-batch (default: 1)")
    p.add_argument("--frames", type=int, default=24, help="stage 2: frames per clip (default: 24)")
    p.add_argument("--mixed-precision", default="no", choices=sorted(AMP), help="autocast dtype (default: no)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute UNet activations in backward")
    p.add_argument("--frozen-dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
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
