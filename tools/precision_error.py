"""The error of each precision mode against fp32 on the bundled demo: PSNR of the decoded video against fp32's.

    python tools/precision_error.py                   # 24 demo frames, the demo's recorded steps and guidance
    python tools/precision_error.py --device cuda     # on a GPU, with fp16 too

Every mode runs the same networks, reference, poses and initial noise; bf16/fp16 load the weights in that dtype and
run without autocast (aa/sampling/pipeline.py). fp16 convolutions are slow or missing on some CPUs: `--modes` picks.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aa.io.video import read_image  # noqa: E402
from aa.poses.keypoints import load_json  # noqa: E402
from aa.poses.render import render_pose  # noqa: E402
from aa.sampling import pipeline  # noqa: E402
from aa.sampling.load import load_for_sampling  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "weights" / "demo"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB (peak 255) of two uint8 videos."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--modes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp16"], help="modes against fp32")
    p.add_argument("--frames", type=int, default=24, help="demo frames")
    p.add_argument("--steps", type=int, help="DDIM steps (default: the demo's recorded value)")
    p.add_argument("--seed", type=int, default=42, help="initial noise seed")
    args = p.parse_args(argv)
    reference = read_image(DEMO / "reference.png")
    videos = {}
    for mode in ["fp32", *args.modes]:
        models, recorded, (w, h) = load_for_sampling(weights=DEMO, dtype=DTYPES[mode], device=args.device)
        settings = pipeline.with_overrides(pipeline.Settings(), **recorded)
        settings = pipeline.with_overrides(settings, steps=args.steps)
        poses = np.stack([render_pose(q, w, h) for q in load_json(DEMO / "poses.json")[:args.frames]])
        t = time.perf_counter()
        videos[mode] = pipeline.animate(models, reference, poses, settings, seed=args.seed, progress=False)
        print(f"{mode}: {time.perf_counter() - t:.1f} s"
              + ("" if mode == "fp32" else f", PSNR against fp32 {psnr(videos[mode], videos['fp32']):.2f} dB, "
                 f"max abs error {np.abs(videos[mode].astype(int) - videos['fp32']).max()}"))


if __name__ == "__main__":
    main()
