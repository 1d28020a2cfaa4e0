"""Score methods against ground truth on the synthetic test splits: PSNR, SSIM, L1, temporal error (SPEC 6), and
PSNR/SSIM on the character alone (its box in each frame, from the dataset, grown by --region-margin pixels).

    python tools/eval.py --data data/synth --method full=runs/full --method no-ref=runs/noref \\
        --method copy=copy-reference --steps 20 --out eval/

A method is NAME=SPEC: SPEC is a native checkpoint folder (train.py's) or `copy-reference` (the baseline: the
reference image repeated in every frame). Every method sees the same inputs for a clip: the character's reference
image from the manifest (characters/NNNN.png: the character in a neutral pose, not a frame of the clip, so even a
perfect model must move it), the clip's keypoints rendered at the video size as training renders them (hands on, face
off: `aa.data.DataConfig`), and the same seed (the base seed plus the clip's position in its split).

Writes to --out: results.json (settings, per-clip and summary metrics), results.md (the summary table: method x
split, plus overall = the mean over every clip), and sheet_<split>.png (for the first clips: poses, reference |
ground truth, one row per method, at a few evenly spaced frames). Metric definitions: aa/metrics.py.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

if __package__ in (None, ""):  # run as `python tools/eval.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aa import metrics  # noqa: E402
from aa.config import VAEConfig  # noqa: E402
from aa.data import DataConfig  # noqa: E402
from aa.models import Models  # noqa: E402
from aa.pipeline import Settings, animate, with_overrides  # noqa: E402
from aa.pose import load_json  # noqa: E402
from aa.pose_render import render_pose  # noqa: E402
from aa.step import module_dtype  # noqa: E402
from aa.vae import DECODER_PREFIXES, AutoencoderKL  # noqa: E402
from aa.video import read_video  # noqa: E402
from aa.weights.native import load_models  # noqa: E402
from aa.weights.sd import load_vae, vae_config_beside  # noqa: E402
from aa.weights.sources import sampling_fields  # noqa: E402

SPLITS = ("test_chars", "test_motions")
COPY_REFERENCE = "copy-reference"
NOT_SAMPLING = {"width", "height"}  # recorded with a checkpoint, but not sampling settings
REGION_METRICS = {"char_psnr": metrics.region_psnr, "char_ssim": metrics.region_ssim}
COLUMNS = {"psnr": "PSNR ↑", "ssim": "SSIM ↑", "char_psnr": "char PSNR ↑", "char_ssim": "char SSIM ↑",
           "l1": "L1 ↓", "temporal": "temporal ↓", "flicker": "flicker →0"}

LEGEND = ("Values in [0, 1] except PSNR (dB, peak 1). char: inside the character's box in each frame, grown by a "
          "margin (NaN for a dataset without boxes). temporal: mean |generated frame-to-frame change - true "
          "change|; flicker: mean generated change - mean true change (negative: too static). Overall: mean over "
          "clips. Definitions: aa/metrics.py.")

# A method: (reference uint8 (h, w, 3) at the frame size, poses uint8 (f, h, w, 3), seed) -> frames (f, h, w, 3).
Method = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class Clip:
    """One test clip and everything every method receives for it."""

    split: str
    index: int  # position in its split's manifest
    video: str  # path relative to the dataset folder
    character: int
    motion: str
    reference: np.ndarray  # uint8 (h, w, 3), resized to the frame size if it differs
    poses: np.ndarray  # uint8 (f, h, w, 3)
    truth: np.ndarray  # uint8 (f, h, w, 3)
    boxes: np.ndarray | None = None  # (f, 4) the character's x0, y0, x1, y1 in each frame (None: not in the data)


def read_split(data: Path, split: str, max_clips: int | None = None, frames: int | None = None) -> list[Clip]:
    """The clips of `split` (its manifest `<split>.json`), truncated to `max_clips` clips of at most `frames`."""
    manifest = data / f"{split}.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: no such manifest; --data must be a folder written by tools.synthetic")
    items = json.loads(manifest.read_text())[:max_clips]
    render = DataConfig()
    clips = []
    for i, item in enumerate(items):
        truth = read_video(data / item["video"])[:frames]
        f, h, w = truth.shape[:3]
        poses = np.stack([render_pose(p, w, h, hands=render.hands, face=render.face)
                          for p in load_json(data / item["keypoints"])[:f]])
        if len(poses) != f:
            raise ValueError(f"{data / item['keypoints']}: {len(poses)} poses for {f} frames of {item['video']}")
        reference = Image.open(data / item["reference"]).convert("RGB")
        if reference.size != (w, h):
            reference = reference.resize((w, h), Image.Resampling.LANCZOS)
        boxes = None
        if "boxes" in item:
            boxes = np.asarray(json.loads((data / item["boxes"]).read_text()), dtype=np.int64)[:f]
            if boxes.shape != (f, 4):
                raise ValueError(f"{data / item['boxes']}: boxes of shape {boxes.shape} for {f} frames")
        clips.append(Clip(split, i, item["video"], item["character"], item["motion"], np.asarray(reference),
                          poses, truth, boxes))
    return clips


def copy_reference(reference: np.ndarray, poses: np.ndarray, seed: int) -> np.ndarray:
    """The trivial baseline: the reference image in every frame (ignores the poses and the seed)."""
    return np.repeat(reference[None], len(poses), axis=0)


def model_settings(recorded: dict, steps: int | None, guidance: float | None, window: int | None,
                   folder: Path) -> Settings:
    """Settings from a checkpoint's recorded sampling (prediction, schedule, reference, ...) and the flags.

    A recorded key that `Settings` does not know is an error, so an ablation switch (e.g. `reference: false`) is
    never silently dropped."""
    unknown = set(recorded) - {f.name for f in fields(Settings)} - NOT_SAMPLING
    if unknown:
        raise ValueError(f"{folder}: recorded sampling settings {sorted(unknown)} are not known to "
                         f"aa.pipeline.Settings; this pipeline cannot honour them")
    return with_overrides(Settings(**sampling_fields(recorded)), steps=steps, guidance=guidance, window=window)


def load_decoder(path: Path, device: str) -> AutoencoderKL:
    """A VAE written by tools/train_vae.py (vae.safetensors with its vae_config.json beside it), fp32."""
    cfg_file = path.parent / "vae_config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file}: not found; --vae takes a vae.safetensors written by tools/train_vae.py")
    return load_vae(path, vae_config_beside(path, VAEConfig()), dtype=torch.float32, device=device)


def with_decoder(models: Models, vae: AutoencoderKL, folder: Path) -> Models:
    """`models` decoding with `vae`, whose encoder and quant_conv must equal the models' own (the same latent
    space, so only the decoder differs); ValueError otherwise."""
    own, new = models.vae.state_dict(), vae.state_dict()
    for key in own:
        if not key.startswith(DECODER_PREFIXES) and not torch.equal(own[key].float(), new[key].float()):
            raise ValueError(f"--vae has another encoder than {folder} ({key} differs): another latent space")
    cfg = replace(models.cfg, vae=vae.cfg) if models.cfg is not None else None
    return replace(models, vae=vae.to(module_dtype(models.vae)), cfg=cfg)


def model_method(folder: Path, steps: int | None, guidance: float | None, window: int | None,
                 device: str, vae: AutoencoderKL | None = None) -> tuple[Method, dict]:
    """A native checkpoint as a method, and the settings it samples with (JSON-ready, with what it recorded);
    `vae` replaces its VAE for decoding (see with_decoder)."""
    # fp32 on the CPU whatever the file holds (the bundled demo is fp16, which CPU convolutions don't take)
    models, recorded = load_models(folder, dtype=torch.float32 if torch.device(device).type == "cpu" else None,
                                   device=device)
    if vae is not None:
        models = with_decoder(models, vae, folder)
    base = model_settings(recorded, steps, guidance, window, folder)

    def run(reference: np.ndarray, poses: np.ndarray, seed: int) -> np.ndarray:
        settings = base if window else with_overrides(base, window=len(poses))  # one window per clip by default
        settings = with_overrides(settings, overlap=min(settings.overlap, settings.window - 1))
        return animate(models, reference, poses, settings, seed=seed, progress=False)

    described = {k: str(v) if isinstance(v, torch.dtype) else v for k, v in asdict(base).items()}
    if not window:
        described.update(window="clip length", overlap=f"min({base.overlap}, clip length - 1)")
    return run, {**described, "recorded": recorded}


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-metric mean over clips (NaN for none, or where a clip lacks the metric)."""
    return {k: float(np.mean([r.get(k, math.nan) for r in rows])) if rows else math.nan
            for k in [*metrics.METRICS, *REGION_METRICS]}


def evaluate(methods: dict[str, Method], clips: list[Clip], seed: int, keep: int = 0, progress: bool = True,
             region_margin: int = 4) -> tuple[list[dict], dict[str, dict[tuple[str, int], np.ndarray]]]:
    """Run every method on every clip: per-clip records, and each method's frames of the first `keep` clips of
    every split (for the contact sheets), by (split, index). Region metrics grow the boxes by `region_margin`."""
    records, outputs = [], {name: {} for name in methods}
    for clip in tqdm(clips, desc="clips", unit="clip", disable=not progress):
        scores = {}
        for name, method in methods.items():
            frames = method(clip.reference, clip.poses, seed + clip.index)
            assert frames.shape == clip.truth.shape, f"{name}: got {frames.shape}, expected {clip.truth.shape}"
            scores[name] = metrics.all_metrics(frames, clip.truth)
            if clip.boxes is not None:
                scores[name].update({k: fn(frames, clip.truth, clip.boxes, region_margin)
                                     for k, fn in REGION_METRICS.items()})
            if clip.index < keep:
                outputs[name][clip.split, clip.index] = frames
        records.append({"split": clip.split, "video": clip.video, "character": clip.character,
                        "motion": clip.motion, "frames": len(clip.truth), "metrics": scores})
    return records, outputs


def summarise(records: list[dict], methods: list[str], splits: list[str]) -> dict:
    """{method: {split or 'overall': {'clips': n, metric: mean}}}; overall weighs every clip equally."""
    out = {}
    for m in methods:
        out[m] = {}
        for split in [*splits, "overall"]:
            rows = [r["metrics"][m] for r in records if split in ("overall", r["split"])]
            out[m][split] = {"clips": len(rows), **mean_metrics(rows)}
    return out


def markdown_table(summary: dict) -> str:
    """The summary as a markdown table, one row per (method, split)."""
    lines = ["| method | split | clips | " + " | ".join(COLUMNS.values()) + " |",
             "|---|---|---:|" + "---:|" * len(COLUMNS)]
    for method, splits in summary.items():
        for split, row in splits.items():
            cells = [_fmt(k, row[k]) for k in COLUMNS]
            lines.append(f"| {method} | {split} | {row['clips']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(metric: str, value: float) -> str:
    """PSNRs to 0.01 dB, the others to 4 decimals."""
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return f"{value:.2f}" if metric.endswith("psnr") else f"{value:.4f}"


def contact_sheet(clips: list[Clip], outputs: dict[str, list[np.ndarray]], columns: int = 4,
                  label_width: int = 96, min_cell: int = 96) -> Image.Image:
    """Per clip, rows poses | ground truth (first cell: the reference) | one row per method, at `columns` evenly
    spaced frames; small frames are enlarged (nearest neighbour) to at least `min_cell` pixels."""
    h, w = clips[0].truth.shape[1:3]
    scale = max(1, math.ceil(min_cell / max(h, w)))
    ch, cw, gap = h * scale, w * scale, 4
    rows_per_clip = 2 + len(outputs)
    sheet = Image.new("RGB", (label_width + (columns + 1) * cw, len(clips) * (rows_per_clip * ch + gap)), "white")
    draw = ImageDraw.Draw(sheet)

    def cell(image: np.ndarray, row: int, col: int) -> None:
        sheet.paste(Image.fromarray(image).resize((cw, ch), Image.Resampling.NEAREST), (label_width + col * cw, row))

    y = 0
    for k, clip in enumerate(clips):
        idx = np.unique(np.linspace(0, len(clip.truth) - 1, columns).round().astype(int))
        rows = [("poses", clip.poses, None), ("reference |\ntruth", clip.truth, clip.reference),
                *[(name, frames[k], None) for name, frames in outputs.items()]]
        for label, frames, first in rows:
            text = f"{clip.split}/{clip.index}\n{label}" if label == "poses" else label
            draw.text((4, y + 4), text, fill="black")
            if first is not None:
                cell(first, y, 0)
            for j, i in enumerate(idx):
                cell(frames[i], y, j + 1)
            y += ch
        y += gap
    return sheet


def parse_method(text: str) -> tuple[str, str]:
    """'NAME=SPEC' -> (NAME, SPEC)."""
    name, sep, spec = text.partition("=")
    if not sep or not name or not spec:
        raise argparse.ArgumentTypeError(f"expected NAME=SPEC (a checkpoint folder or {COPY_REFERENCE}), got {text!r}")
    return name, spec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see --help)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a synthetic dataset folder (python -m tools.synthetic)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), help="manifests to score (default: both test splits)")
    p.add_argument("--method", type=parse_method, action="append", required=True, metavar="NAME=SPEC",
                   help=f"a method to score (repeatable): SPEC is a native checkpoint folder or {COPY_REFERENCE}")
    p.add_argument("--steps", type=int, help="DDIM steps for every model (default: pipeline.Settings')")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: pipeline.Settings')")
    p.add_argument("--vae", type=Path, help="decode every model with this VAE (tools/train_vae.py --decoder-only "
                                             "output; its encoder must be the models')")
    p.add_argument("--window", type=int, help="frames per temporal window (default: the whole clip in one window)")
    p.add_argument("--seed", type=int, default=0, help="base seed; clip i of a split uses seed + i for every method")
    p.add_argument("--frames", type=int, help="score only the first N frames of each clip")
    p.add_argument("--max-clips", type=int, help="score only the first N clips of each split")
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
    methods: dict[str, Method] = {}
    described: dict[str, dict] = {}
    vae = load_decoder(args.vae, args.device) if args.vae else None
    for name, spec in args.method:
        if spec == COPY_REFERENCE:
            methods[name], described[name] = copy_reference, {"spec": spec}
        else:
            methods[name], settings = model_method(Path(spec), args.steps, args.guidance, args.window, args.device,
                                                   vae)
            described[name] = {"spec": spec, "settings": settings}
    clips = [c for split in args.splits for c in read_split(args.data, split, args.max_clips, args.frames)]
    records, outputs = evaluate(methods, clips, args.seed, args.sheet_clips, progress=not args.quiet,
                                region_margin=args.region_margin)
    summary = summarise(records, list(methods), args.splits)

    args.out.mkdir(parents=True, exist_ok=True)
    run = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "method"}
    results = {"run": run, "methods": described, "summary": summary, "clips": records}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    table = markdown_table(summary)
    (args.out / "results.md").write_text(f"# Evaluation on {args.data}\n\n{table}\n{LEGEND}\n")
    for split in args.splits:
        shown = [c for c in clips if c.split == split and c.index < args.sheet_clips]
        if shown:
            frames = {m: [o[c.split, c.index] for c in shown] for m, o in outputs.items()}
            sheet = contact_sheet(shown, frames, args.sheet_frames)
            sheet.save(args.out / f"sheet_{split}.png")
    print(table, end="")
    print(f"wrote {args.out}/results.json, results.md and sheet_<split>.png")
    return results


if __name__ == "__main__":
    main()
