"""Quality and time against the number of steps, per scheduler, on the synthetic test splits: PSNR, SSIM, L1 and
temporal error against ground truth, and seconds per video, for every (scheduler, steps) pair in one process.

    python -m aa.synthetic --out data/synth96p ...          # the demo's data (docs/demo_training.md, round 1)
    OMP_NUM_THREADS=1 python tools/steps_curve.py --data data/synth96p --max-clips 8 --frames 12
    python tools/steps_curve.py --replot runs/steps_curve.json      # redraw the plot from a results file

For each clip, each step count and each scheduler (the schedulers' order rotates from clip to clip, so a slow
moment of a shared machine does not fall on one scheduler) the model animates the clip exactly as tools/eval.py does
(the clip's reference and poses, seed = --seed + the clip's index, one window over the clip) and the call is timed
(reference encoding, denoising and decoding). Writes the per-clip records and the means to --out (JSON, rewritten
after every clip) and the curves to --plot (PNG, drawn with PIL).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

if __package__ in (None, ""):  # run as `python tools/steps_curve.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aa.eval import metrics
from aa.eval.benchmark import model_settings, read_split
from aa.sampling.pipeline import animate, with_overrides
from aa.sampling.solvers import SCHEDULERS
from aa.weights.native import load_models

KEYS = ("psnr", "ssim", "l1", "temporal", "psnr_ref", "seconds")
COLOURS = {"ddim": (40, 40, 40), "dpm++2m": (214, 39, 40), "unipc": (31, 119, 180)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see --help)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="a synthetic dataset folder (python -m aa.synthetic)")
    p.add_argument("--model", type=Path, default=Path("weights/demo"), help="a native checkpoint folder")
    p.add_argument("--splits", nargs="+", default=["test_chars"], help="manifests to score (default: test_chars)")
    p.add_argument("--steps", type=int, nargs="+", default=[4, 6, 8, 10, 12, 15, 20, 25], help="step counts")
    p.add_argument("--schedulers", nargs="+", choices=SCHEDULERS, default=list(SCHEDULERS), help="schedulers")
    p.add_argument("--max-clips", type=int, help="only the first N clips of each split")
    p.add_argument("--frames", type=int, help="only the first N frames of each clip")
    p.add_argument("--reference-steps", type=int, default=100,
                   help="steps of the converged reference each result is also compared with (psnr_ref)")
    p.add_argument("--reference-scheduler", choices=SCHEDULERS, default="dpm++2m",
                   help="the scheduler of that reference (default: dpm++2m)")
    p.add_argument("--seed", type=int, default=0, help="base seed; clip i uses seed + i (as tools/eval.py)")
    p.add_argument("--out", type=Path, default=Path("runs/steps_curve.json"), help="results JSON")
    p.add_argument("--plot", type=Path, default=Path("docs/steps_curve.png"), help="the curves (PNG)")
    p.add_argument("--replot", type=Path, help="only redraw --plot from this results JSON")
    args = p.parse_args(argv)
    if args.replot is None and args.data is None:
        p.error("--data is required (unless --replot)")
    return args


def means(records: list[dict], schedulers: list[str], steps: list[int]) -> dict[str, dict[str, dict[str, float]]]:
    """scheduler -> str(steps) -> metric -> mean over clips."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for sch in schedulers:
        out[sch] = {}
        for n in steps:
            rows = [r for r in records if r["scheduler"] == sch and r["steps"] == n]
            if rows:
                out[sch][str(n)] = {k: float(np.mean([r[k] for r in rows])) for k in KEYS} | {
                    "seconds_median": float(np.median([r["seconds"] for r in rows])),
                    "seconds_min": float(np.min([r["seconds"] for r in rows])), "clips": len(rows)}
    return out


def table(summary: dict) -> str:
    """The means as a markdown table, one row per (scheduler, steps)."""
    lines = ["| scheduler | steps | PSNR ↑ | SSIM ↑ | L1 ↓ | temporal ↓ | PSNR to converged ↑ "
             "| s / video (median, min) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for sch, by_steps in summary.items():
        for n, m in by_steps.items():
            lines.append(f"| {sch} | {n} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['l1']:.4f} | {m['temporal']:.4f} | "
                         f"{m['psnr_ref']:.2f} | {m['seconds_median']:.2f}, {m['seconds_min']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path, title: str) -> None:
    """Four panels (PSNR and SSIM to the ground truth, PSNR to the converged reference, median seconds per video,
    against steps), one line per scheduler; PIL only."""
    panel_w, panel_h, margin = 330, 240, 48
    panels = (("psnr", "PSNR to ground truth (dB)"), ("ssim", "SSIM to ground truth"),
              ("psnr_ref", "PSNR to the converged sample (dB)"), ("seconds_median", "seconds / video (median)"))
    img = Image.new("RGB", (len(panels) * panel_w + margin, panel_h + 2 * margin), "white")
    d = ImageDraw.Draw(img)
    d.multiline_text((margin, 4), title, fill="black")
    steps = sorted({int(n) for by in summary.values() for n in by})
    for i, (key, label) in enumerate(panels):
        x0, y0 = margin + i * panel_w, margin
        w, h = panel_w - margin, panel_h - 20
        values = [m[key] for by in summary.values() for m in by.values() if math.isfinite(m[key])]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)  # inf: identical to the converged sample
        lo, hi = lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9)
        digits = {"psnr": 2, "ssim": 4}.get(key, 1)  # tick labels

        def xy(n: int, v: float, x0=x0, y0=y0, w=w, h=h, lo=lo, hi=hi) -> tuple[float, float]:
            return x0 + w * (n - steps[0]) / max(steps[-1] - steps[0], 1), y0 + h * (1 - (v - lo) / (hi - lo))

        d.rectangle([x0, y0, x0 + w, y0 + h], outline=(160, 160, 160))
        d.text((x0, y0 - 14), label, fill="black")
        for n in steps:
            x, _ = xy(n, lo)
            d.line([x, y0 + h, x, y0 + h + 4], fill="black")
            d.text((x - 5, y0 + h + 6), str(n), fill="black")
        for v in np.linspace(lo, hi, 5)[1:-1]:
            _, y = xy(steps[0], v)
            d.line([x0 - 4, y, x0, y], fill="black")
            d.text((x0 - margin + 2, y - 6), f"{v:.{digits}f}", fill="black")
        for j, (sch, by) in enumerate(summary.items()):
            pts = [xy(int(n), m[key]) for n, m in sorted(by.items(), key=lambda kv: int(kv[0]))
                   if math.isfinite(m[key])]
            colour = COLOURS.get(sch, (0, 160, 0))
            d.line(pts, fill=colour, width=2)
            for x, y in pts:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            if i == 0:  # the legend, under the panels
                d.text((margin + 80 + 90 * j, panel_h + margin + 10), sch, fill=colour)
    d.text((margin, panel_h + margin + 10), "steps", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    img.save(tmp)
    os.replace(tmp, path)


def write_json(path: Path, results: dict) -> None:
    """Write atomically (the file is rewritten after every clip)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> dict:
    """Run the sweep (or only redraw), print the table."""
    args = parse_args(argv)
    if args.replot is not None:
        results = json.loads(args.replot.read_text())
        plot(results["summary"], args.plot, results["title"])
        print(table(results["summary"]), end="")
        return results
    models, recorded = load_models(args.model, dtype=torch.float32, device="cpu")  # fp16 files: CPU runs fp32
    base = model_settings(recorded, None, None, None, args.model)
    clips = [c for split in args.splits for c in read_split(args.data, split, args.max_clips, args.frames)]
    conditions = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
                  f"{torch.__version__}, {torch.get_num_threads()} threads")
    title = (f"{args.model} on {len(clips)} clips of {'+'.join(args.splits)} ({clips[0].truth.shape[0]} frames, "
             f"{clips[0].truth.shape[2]}x{clips[0].truth.shape[1]}); converged sample: {args.reference_scheduler}, "
             f"{args.reference_steps} steps\nCPU: {conditions}")
    records: list[dict] = []
    for ci, clip in enumerate(clips):
        reference = with_overrides(base, steps=args.reference_steps, scheduler=args.reference_scheduler,
                                   window=len(clip.poses), overlap=min(base.overlap, len(clip.poses) - 1))
        converged = animate(models, clip.reference, clip.poses, reference, seed=args.seed + clip.index, progress=False)
        k = ci % len(args.schedulers)
        order = args.schedulers[k:] + args.schedulers[:k]
        for n in args.steps:
            for sch in order:
                window = len(clip.poses)  # one window per clip, as tools/eval.py by default
                settings = with_overrides(base, steps=n, scheduler=sch, window=window,
                                          overlap=min(base.overlap, window - 1))
                t0 = time.perf_counter()
                frames = animate(models, clip.reference, clip.poses, settings, seed=args.seed + clip.index,
                                 progress=False)
                seconds = time.perf_counter() - t0
                scores = metrics.all_metrics(frames, clip.truth)
                records.append({"split": clip.split, "clip": clip.index, "scheduler": sch, "steps": n,
                                "seconds": seconds, "psnr_ref": metrics.psnr(frames, converged),
                                **{key: float(scores[key]) for key in KEYS[:4]}})
        summary = means(records, args.schedulers, args.steps)
        results = {"title": title, "run": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   "conditions": conditions, "summary": summary, "records": records}
        write_json(args.out, results)
        print(f"clip {ci + 1}/{len(clips)} done", flush=True)
    plot(summary, args.plot, title)
    print(table(summary), end="")
    print(f"wrote {args.out} and {args.plot}")
    return results


if __name__ == "__main__":
    main()
