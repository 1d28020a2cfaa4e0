"""Score methods against ground truth on the synthetic test splits: PSNR, SSIM, L1, temporal error, and
PSNR/SSIM on the character alone (its box in each frame, from the dataset, grown by --region-margin pixels).

    python tools/eval.py --data data/synth --method full=runs/full --method no-ref=runs/noref \\
        --method copy=copy-reference --steps 20 --out eval/

A method is NAME=FOLDER: FOLDER is a native checkpoint folder (train.py's), `copy-reference` (the baseline: the
reference image repeated in every frame) or `autoencode:FOLDER` (not a method but the ceiling of every model in
FOLDER's latent space: the ground truth encoded and decoded by its VAE, or by --vae's decoder when given). Every
method sees the same inputs for a clip: the character's reference image from the manifest (characters/NNNN.png: the
character in a neutral pose, not a frame of the clip, so even a perfect model must move it), the clip's keypoints
rendered at the video size as training renders them (hands on, face off: `aa.training.data.DataConfig`), and the
same seed (the base seed plus the clip's position in its split).

Writes to --out: results.json (settings, per-clip and summary metrics), results.md (the summary table: method x
split, plus overall = the mean over every clip; then part ΔE for each body part), and sheet_<split>.png (for the
first clips: poses, reference | ground truth, one row per method, at a few evenly spaced frames); with --hue-probe
also sheet_hue_probe.png: the first clip of the first split at every angle. Metric definitions:
aa/eval/metrics.py.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as `python tools/eval.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aa.eval.benchmark import (  # noqa: E402
    AUTOENCODE,
    COPY_REFERENCE,
    LEGEND,
    SPLITS,
    Autoencoded,
    Method,
    autoencoded,
    contact_sheet,
    copy_reference,
    evaluate,
    hue_probe,
    load_decoder,
    markdown_table,
    model_method,
    part_table,
    read_split,
    summarise,
)
from aa.sampling.choices import SCHEDULER_HELP, SCHEDULERS


def parse_method(text: str) -> tuple[str, str]:
    """'NAME=FOLDER' -> (NAME, FOLDER)."""
    name, sep, spec = text.partition("=")
    if not sep or not name or not spec:
        raise argparse.ArgumentTypeError(f"expected NAME=FOLDER (a checkpoint folder, {COPY_REFERENCE} or "
                                         f"{AUTOENCODE}FOLDER), got {text!r}")
    return name, spec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see --help)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a synthetic dataset folder (python -m aa.synthetic)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), help="manifests to score (default: both test splits)")
    p.add_argument("--method", type=parse_method, action="append", required=True, metavar="NAME=FOLDER",
                   help=f"a method to score (repeatable): FOLDER is a native checkpoint folder or {COPY_REFERENCE}")
    p.add_argument("--steps", type=int, help="denoising steps for every model (default: pipeline.Settings')")
    p.add_argument("--scheduler", choices=SCHEDULERS,
                   help="the sampler of every model (default: ddim): " + "; ".join(f"{k}: {v}" for k, v in
                                                                                   SCHEDULER_HELP.items()))
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: pipeline.Settings')")
    p.add_argument("--vae", type=Path, help="decode every model with this VAE (tools/train_vae.py --decoder-only "
                                             "output; its encoder must be the models')")
    p.add_argument("--window", type=int, help="frames per temporal window (default: the whole clip in one window)")
    p.add_argument("--seed", type=int, default=0, help="base seed; clip i of a split uses seed + i for every method")
    p.add_argument("--frames", type=int, help="score only the first N frames of each clip")
    p.add_argument("--max-clips", type=int, help="score only the first N clips of each split")
    p.add_argument("--hue-probe", type=float, nargs="+", default=[], metavar="DEGREES",
                   help="also score every clip with its reference and ground truth hue-rotated by each angle (e.g. "
                        "90 180 270), as splits '<split>@<angle>': does the output follow the reference's colours?")
    p.add_argument("--region-margin", type=int, default=4,
                   help="pixels added around the character's box for the char PSNR/SSIM (default: 4)")
    p.add_argument("--sheet-clips", type=int, default=3, help="clips shown on each split's contact sheet")
    p.add_argument("--sheet-frames", type=int, default=6, help="frames shown per clip on the contact sheets")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device of the models")
    p.add_argument("--out", type=Path, default=Path("eval"), help="output folder (results.json, results.md, sheets)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    names = [name for name, _ in args.method]
    if len(set(names)) != len(names):
        p.error(f"method names must be unique, got {names}")
    if args.region_margin < 0:
        p.error("--region-margin must be at least 0")
    for flag in ("steps", "window", "frames", "max_clips", "sheet_clips", "sheet_frames"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Score every method on every clip, write results.json, results.md and the sheets, print the table."""
    args = parse_args(argv)
    methods: dict[str, Method | Autoencoded] = {}
    described: dict[str, dict] = {}
    vae = load_decoder(args.vae, args.device) if args.vae else None
    for name, spec in args.method:
        if spec == COPY_REFERENCE:
            methods[name], described[name] = copy_reference, {"spec": spec}
        elif spec.startswith(AUTOENCODE):
            methods[name] = autoencoded(Path(spec[len(AUTOENCODE):]), args.device, vae)
            described[name] = {"spec": spec}
        else:
            methods[name], settings = model_method(Path(spec), args.steps, args.guidance, args.window, args.device,
                                                   vae, args.scheduler)
            described[name] = {"spec": spec, "settings": settings}
    clips = [c for split in args.splits for c in read_split(args.data, split, args.max_clips, args.frames)]
    clips += hue_probe(clips, args.hue_probe)
    splits = [*args.splits, *[f"{s}@{a:g}" for a in args.hue_probe if a % 360 for s in args.splits]]
    records, outputs = evaluate(methods, clips, args.seed, args.sheet_clips, progress=not args.quiet,
                                region_margin=args.region_margin)
    summary = summarise(records, list(methods), splits)

    args.out.mkdir(parents=True, exist_ok=True)
    run = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "method"}
    results = {"run": run, "methods": described, "summary": summary, "clips": records}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    table, parts = markdown_table(summary), part_table(summary)
    by_part = f"\n## Part ΔE by body part\n\n{parts}" if parts else ""
    (args.out / "results.md").write_text(f"# Evaluation on {args.data}\n\n{table}\n{LEGEND}\n{by_part}")
    for split in splits:
        shown = [c for c in clips if c.split == split and c.index < args.sheet_clips]
        if shown:
            frames = {m: [o[c.split, c.index] for c in shown] for m, o in outputs.items()}
            sheet = contact_sheet(shown, frames, args.sheet_frames)
            sheet.save(args.out / f"sheet_{split}.png")
    probed = [c for c in clips if c.split.partition("@")[0] == args.splits[0] and c.index == 0]
    if args.hue_probe and args.sheet_clips and probed:  # one clip at every angle: do the colours follow?
        frames = {m: [o[c.split, c.index] for c in probed] for m, o in outputs.items()}
        contact_sheet(probed, frames, args.sheet_frames).save(args.out / "sheet_hue_probe.png")
    print(table, end="")
    print(f"wrote {args.out}/results.json, results.md and sheet_<split>.png")
    return results


if __name__ == "__main__":
    main()
