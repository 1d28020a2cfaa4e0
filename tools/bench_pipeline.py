"""Benchmark the whole animate() pipeline with random full-size weights (no files needed).

    python tools/bench_pipeline.py --device cuda --dtype bf16                 # 24 frames, 512x768, 25 steps
    python tools/bench_pipeline.py --device cpu --width 128 --height 128 --frames 4 --steps 2   # a CPU-sized run
    python tools/bench_pipeline.py --kv-only --device cpu                     # cached vs per-frame reference K/V
    git archive HEAD aa | tar -x -C /tmp/aa-old && python tools/bench_pipeline.py --old /tmp/aa-old   # before/after

Prints the time per stage (reference encoding, UNet steps, VAE decode), per-step time, peak memory and, on a GPU,
the achieved TFLOP/s against the FLOPs of the run (counted on the meta device). With `--old DIR` (a folder
holding an earlier `aa/` package) it compares that code with this one instead (tools/bench_compare.py): alternating
runs in fresh processes, the same sizes, inputs and threads.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

if __package__ in (None, ""):  # run as `python tools/bench_pipeline.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aa.models import config  # noqa: E402
from aa.models.bundle import Models  # noqa: E402
from aa.sampling import pipeline  # noqa: E402
from aa.sampling.plan import prepare_unet  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def unet_flops(cfg: config.ModelConfig, frames: int, height: int, width: int, guidance: bool) -> dict[str, float]:
    """FLOPs of one denoising step (both guidance branches), one ReferenceNet pass, the Pose Guider over the window
    and one VAE decode per frame, counted on the meta device."""
    with torch.device("meta"), torch.inference_mode():
        m = Models.build(cfg)
        h, w = height // 8, width // 8
        ctx = torch.zeros(1, 1, cfg.unet.context_dim)
        counts = {}
        with FlopCounterMode(display=False) as fc:
            feats = m.reference_net(torch.zeros(1, 4, h, w), ctx)
            kv = m.unet.reference_kv(feats)
        counts["reference"] = fc.get_total_flops()
        b = 2 if guidance else 1
        with FlopCounterMode(display=False) as fc:
            m.unet(torch.zeros(b * frames, 4, h, w), 500, ctx.repeat(b, 1, 1), ref_kv=kv,
                   pose_features=torch.zeros(b * frames, cfg.unet.block_out_channels[0], h, w), num_frames=frames)
        counts["step"] = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            m.pose_guider(torch.zeros(frames, 3, height, width))
        counts["pose_guider"] = fc.get_total_flops()  # once per video (aa/sampling/plan.py)
        with FlopCounterMode(display=False) as fc:
            m.vae.decode(torch.zeros(1, 4, h, w))
        counts["decode_per_frame"] = fc.get_total_flops()
    return counts


def bench_kv(models: Models, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    """One denoising-UNet step with reference attention: K/V cached once vs projected again for every frame."""
    h, w, f = args.height // 8, args.width // 8, args.frames
    ctx = torch.randn(1, 1, models.unet.cfg.context_dim, device=device)
    x = torch.randn(f, 4, h, w, device=device)
    autocast = torch.autocast("cuda", dtype=dtype) if device.type == "cuda" else nullcontext()
    with torch.inference_mode(), autocast:
        feats = models.reference_net(torch.randn(1, 4, h, w, device=device), ctx)
        kv = models.unet.reference_kv(feats)
        cached = lambda: models.unet(x, 500, ctx, ref_kv=kv, num_frames=f)  # noqa: E731

        def per_frame():  # the released code projects [frame; reference] for every frame at every step
            kv_f = models.unet.reference_kv([t.repeat_interleave(f, 0) for t in feats])
            kv_1 = [(k[:1], v[:1]) for k, v in kv_f]  # same values; the projection work is what is measured
            return models.unet(x, 500, ctx, ref_kv=kv_1, num_frames=f)
        for name, fn in (("cached K/V", cached), ("per-frame K/V", per_frame)):
            fn()
            times = [timed(fn, device)[1] for _ in range(args.repeats)]
            print(f"{name:>14}: {statistics.median(times) * 1000:8.1f} ms per UNet step "
                  f"({f} frames, {args.width}x{args.height}, median of {args.repeats})")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="weights/autocast precision on CUDA")
    p.add_argument("--width", type=int, default=512, help="video width in pixels")
    p.add_argument("--height", type=int, default=768, help="video height in pixels")
    p.add_argument("--frames", type=int, default=24, help="video length (one window when <= --window)")
    p.add_argument("--window", type=int, default=24, help="frames per temporal window")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--guidance", type=float, default=3.5, help="guidance scale (1 = no unconditional branch)")
    p.add_argument("--model", choices=["sd15", "tiny"], default="sd15", help="architecture (random weights)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats for --kv-only")
    p.add_argument("--kv-only", action="store_true", help="only compare cached and per-frame reference K/V")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet first (CUDA)")
    p.add_argument("--offload", action="store_true", help="ReferenceNet and CLIP to the CPU after encoding")
    p.add_argument("--old", type=Path, help="compare with the aa/ package in this folder (tools/bench_compare.py)")
    args, rest = p.parse_known_args(argv)
    if args.old is not None:
        from tools.bench_compare import main as compare
        compare(["--old", str(args.old), *rest])
        return
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")

    device = torch.device(args.device)
    dtype = DTYPES[args.dtype] if device.type == "cuda" else torch.float32
    cfg = config.sd15() if args.model == "sd15" else config.tiny()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):
        models = Models.build(cfg)
    models.to(device, dtype)
    print(f"built {args.model} models on {device} in {dtype} in {time.perf_counter() - t0:.1f}s")
    if args.kv_only:
        bench_kv(models, args, device, dtype)
        return
    prepare_unet(models.unet, models.pose_guider, compile=args.compile)

    settings = pipeline.Settings(steps=args.steps, guidance=args.guidance, window=args.window, dtype=dtype,
                                 offload=args.offload)
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    poses = rng.integers(0, 256, (args.frames, args.height, args.width, 3), dtype=np.uint8)
    stages: dict[str, list[float]] = {"reference": [], "unet": [], "decode": []}

    def wrap(module, name):
        orig = module.forward

        def forward(*a, **k):
            out, dt = timed(lambda: orig(*a, **k), device)
            stages[name].append(dt)
            return out
        module.forward = forward
    wrap(models.reference_net, "reference")
    wrap(models.unet, "unet")
    wrap(models.vae.decoder, "decode")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # one warm-up step (kernels, autotuning), then the measured run
    pipeline.animate(models, ref, poses[:min(args.frames, args.window)], pipeline.with_overrides(settings, steps=1),
                     progress=False)
    for v in stages.values():
        v.clear()
    _, total = timed(lambda: pipeline.animate(models, ref, poses, settings, progress=False), device)

    flops = unet_flops(cfg, min(args.frames, args.window), args.height, args.width, args.guidance != 1.0)
    windows = -(-max(args.frames - args.window, 0) // (args.window - 4)) + 1
    work = flops["reference"] + flops["step"] * args.steps * windows + flops["decode_per_frame"] * args.frames \
        + flops["pose_guider"] * args.frames / min(args.frames, args.window)
    print(f"\n{args.frames} frames at {args.width}x{args.height}, {args.steps} steps, guidance {args.guidance}, "
          f"{device} {str(dtype).removeprefix('torch.')}")
    print(f"  total          {total:8.2f} s")
    for name, v in stages.items():
        print(f"  {name:<14} {sum(v):8.2f} s ({100 * sum(v) / total:4.1f}%), {len(v)} calls")
    print(f"  per step       {sum(stages['unet']) / max(args.steps, 1):8.3f} s (UNet calls of all windows)")
    if device.type == "cuda":
        print(f"  peak memory    {torch.cuda.max_memory_allocated(device) / 2**30:8.2f} GiB (allocated)")
    else:
        print(f"  peak RSS       {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:8.2f} GiB")
    print(f"  work           {work / 1e15:8.3f} PFLOP (counted), {work / total / 1e12:8.1f} TFLOP/s achieved")


if __name__ == "__main__":
    main()
