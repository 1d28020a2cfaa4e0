"""Before/after benchmark of the inference path: an earlier `aa/` package against this one, on the same machine.

    git -C . archive HEAD aa | tar -x -C /tmp/aa-old
    python tools/bench_compare.py --old /tmp/aa-old --rounds 3
    python tools/bench_pipeline.py --old /tmp/aa-old ...        # the same

Every measurement runs in a fresh process that imports `aa` from one folder; old and new alternate, round after
round, so load on a shared machine hits both alike; the fastest run of each (the least disturbed by other load)
and the median are printed. Measured: the whole video
(`pipeline.animate`, random demo-architecture weights) at each `--video` size, one guided UNet step (both branches,
reference K/V, pose features) of the demo architecture at the first size, and the FLOPs of one guided denoising step
of the SD 1.5 architecture at 24 frames 512x768, counted on the meta device by running `pipeline.denoise` for two
steps and for one and taking the difference (what the loop does per step, Pose Guider included where it reruns).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> dict:
    """One measurement of the `aa` package found first on sys.path (set by the parent)."""
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from aa.models import config
    from aa.models.bundle import Models
    from aa.sampling import pipeline

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    if args.task == "flops":
        frames, width, height = 24, 512, 768
        with torch.device("meta"):
            m = Models.build(config.sd15())
            ctx = torch.zeros(1, 1, m.unet.cfg.context_dim)
            kv = m.unet.reference_kv(m.reference_net(torch.zeros(1, 4, height // 8, width // 8), ctx))
            z = torch.zeros(frames, 4, height // 8, width // 8)
        poses = np.zeros((frames, height, width, 3), np.uint8)
        counts = []
        for steps in (1, 2):
            with FlopCounterMode(display=False) as fc:
                pipeline.denoise(m, z, poses, ctx, kv, pipeline.Settings(steps=steps), progress=False)
            counts.append(fc.get_total_flops())
        return {"flops": counts[1] - counts[0]}

    frames, width, height = (int(v) for v in args.size.split("x"))
    torch.manual_seed(0)
    m = Models.build(config.demo())
    ref = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    poses = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    if args.task == "video":
        s = pipeline.Settings(steps=args.steps)
        pipeline.animate(m, ref, poses, pipeline.with_overrides(s, steps=1), progress=False)  # warm-up
        t = time.perf_counter()
        pipeline.animate(m, ref, poses, s, progress=False)
        return {"seconds": time.perf_counter() - t}
    # one guided UNet step, both branches batched as guided_prediction does
    with torch.inference_mode():
        ctx = torch.randn(1, 1, m.unet.cfg.context_dim)
        down = m.vae.downscale
        z = torch.randn(1, m.vae.cfg.latent_channels, height // down, width // down)
        kv = m.unet.reference_kv(m.reference_net(z, ctx))
        x = torch.randn(2 * frames, *z.shape[1:])
        pose = torch.randn(2 * frames, m.unet.cfg.block_out_channels[0], *z.shape[2:])
        c2 = torch.cat([ctx, torch.zeros_like(ctx)])
        times = []
        for _ in range(args.repeats + 1):
            t = time.perf_counter()
            m.unet(x, 500, c2, ref_kv=kv, pose_features=pose, num_frames=frames)
            times.append(time.perf_counter() - t)
    return {"seconds": statistics.median(times[1:])}


def run(root: Path, task: str, args: argparse.Namespace, size: str = "") -> dict:
    """Run one worker in a fresh process with `root` first on sys.path."""
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", task, "--size", size or "1x8x8",
           "--steps", str(args.steps), "--threads", str(args.threads), "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, env=env, cwd=str(root), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"worker {task} {size} in {root} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", type=Path, help="folder holding the earlier aa/ package (required)")
    p.add_argument("--video", nargs="+", default=["24x64x64", "8x128x128"],
                   help="whole-video sizes, FRAMESxWIDTHxHEIGHT (demo architecture, random weights)")
    p.add_argument("--steps", type=int, default=5, help="DDIM steps per video")
    p.add_argument("--rounds", type=int, default=3, help="alternating old/new rounds")
    p.add_argument("--repeats", type=int, default=3, help="timed UNet steps per round")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--no-flops", action="store_true", help="skip the 512x768 FLOP count")
    p.add_argument("--worker", choices=["video", "unet", "flops"], help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.task = args.worker
        print(json.dumps(worker(args)))
        return
    if args.old is None or not (args.old / "aa" / "pipeline.py").is_file():
        raise SystemExit(f"{args.old} holds no aa/sampling/pipeline.py")
    roots = {"old": args.old.resolve(), "new": ROOT}
    tasks = [("video", size) for size in args.video] + [("unet", args.video[0])]
    results: dict[tuple[str, str, str], list[float]] = {}
    for r in range(args.rounds):
        for task, size in tasks:
            for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
                results.setdefault((task, size, name), []).append(run(roots[name], task, args, size)["seconds"])
    print(f"threads {args.threads}, {args.rounds} alternating rounds; demo architecture, random weights, "
          f"{args.steps} steps, guidance 3.5; fastest run (median)")
    print(f"{'measurement':<34} {'old':>18} {'new':>18} {'new/old':>8}")
    for task, size in tasks:
        old, new = (min(results[(task, size, n)]) for n in ("old", "new"))
        old_m, new_m = (statistics.median(results[(task, size, n)]) for n in ("old", "new"))
        label = f"whole video {size}" if task == "video" else f"guided UNet step {size}"
        print(f"{label:<34} {old:8.3f}s ({old_m:6.3f}) {new:8.3f}s ({new_m:6.3f}) {new / old:8.3f}")
    if not args.no_flops:
        old, new = (run(roots[n], "flops", args)["flops"] for n in ("old", "new"))
        print(f"{'FLOPs/guided step 24x512x768 SD':<34} {old / 1e12:17.2f}T {new / 1e12:17.2f}T {new / old:8.3f}")


if __name__ == "__main__":
    main()
