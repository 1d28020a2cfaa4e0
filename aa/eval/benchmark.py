"""Scoring methods against ground truth on the synthetic test splits (tools/eval.py is its command line): the
clips and their inputs, the copy-reference baseline, a native checkpoint as a method, per-clip metrics, the summary
table and the contact sheets. Metric definitions: aa/eval/metrics.py."""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from aa.eval import colour, metrics
from aa.eval.colour import hue_rotate
from aa.io.video import read_video
from aa.models.bundle import Models, module_dtype
from aa.models.vae import DECODER_PREFIXES, AutoencoderKL
from aa.poses.keypoints import load_json
from aa.poses.render import render_pose
from aa.sampling.load import sampling_fields
from aa.sampling.pipeline import Settings, animate, with_overrides
from aa.synthetic.dataset import load_parts
from aa.training.data import DataConfig
from aa.weights.native import load_models
from aa.weights.sd import load_vae, vae_config_beside

SPLITS = ("test_chars", "test_motions")


COPY_REFERENCE = "copy-reference"


AUTOENCODE = "autoencode:"  # "autoencode:FOLDER": the ground truth through FOLDER's VAE (class Autoencoded)


NOT_SAMPLING = {"width", "height"}  # recorded with a checkpoint, but not sampling settings


REGION_METRICS = {"char_psnr": metrics.region_psnr, "char_ssim": metrics.region_ssim}


COLOUR_METRICS = ("part_de", "part_de_px")  # aa/eval/colour.py summary: per-part CIEDE2000, mean colour and pixels


COLUMNS = {"psnr": "PSNR ↑", "ssim": "SSIM ↑", "char_psnr": "char PSNR ↑", "char_ssim": "char SSIM ↑",
           "part_de": "part ΔE ↓", "part_de_px": "part ΔE px ↓", "l1": "L1 ↓", "temporal": "temporal ↓",
           "flicker": "flicker →0"}


LEGEND = ("Values in [0, 1] except PSNR (dB, peak 1). char: inside the character's box in each frame, grown by a "
          "margin (NaN for a dataset without boxes). part ΔE: CIEDE2000 between the generated and true mean colour "
          "of each body part (shirt, sleeves, trousers, skin, hair, hat, shoes: the dataset's label maps), averaged"
          " over the parts; part ΔE px: the same per pixel (NaN without label maps). split@N: the split with its "
          "references and ground truth hue-rotated by N degrees (the hue probe). temporal: mean |generated frame-"
          "to-frame change - true change|; flicker: mean generated change - mean true change (negative: too "
          "static). Overall: mean over clips. Definitions: aa/eval/metrics.py.")


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
    parts: np.ndarray | None = None  # (f, h, w) what each true pixel shows (aa.synthetic.canvas.PARTS; None: no data)


def read_split(data: Path, split: str, max_clips: int | None = None, frames: int | None = None) -> list[Clip]:
    """The clips of `split` (its manifest `<split>.json`), truncated to `max_clips` clips of at most `frames`."""
    manifest = data / f"{split}.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: no such manifest; --data must be a folder written by aa.synthetic")
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
        parts = None
        if "parts" in item:
            parts = load_parts(data / item["parts"])[:f]
            if parts.shape != truth.shape[:3]:
                raise ValueError(f"{data / item['parts']}: labels of shape {parts.shape} for frames {truth.shape[:3]}")
        clips.append(Clip(split, i, item["video"], item["character"], item["motion"], np.asarray(reference),
                          poses, truth, boxes, parts))
    return clips


def hue_probe(clips: list[Clip], angles: list[float]) -> list[Clip]:
    """The clips again with reference and ground truth hue-rotated alike by each nonzero angle (poses, boxes and
    labels unchanged), in splits named '<split>@<angle>': a method that copies the reference's colours scores about
    the same at every angle; one that paints colours it memorised does not."""
    return [replace(c, split=f"{c.split}@{a:g}", reference=hue_rotate(c.reference, a), truth=hue_rotate(c.truth, a))
            for a in angles if a % 360 for c in clips]


def copy_reference(reference: np.ndarray, poses: np.ndarray, seed: int) -> np.ndarray:
    """The trivial baseline: the reference image in every frame (ignores the poses and the seed)."""
    return np.repeat(reference[None], len(poses), axis=0)


@dataclass(frozen=True)
class Autoencoded:
    """Not a method but the ceiling of every method in one latent space: each true frame encoded (posterior mean)
    and decoded by a VAE, rounded to uint8 as a saved video is. A model that samples in that latent space can at
    best reproduce these frames, so this row says how much of a model's error is the VAE's (its blur costs colour
    too: a thin part's mean colour mixes with its neighbours'). Called with the clip's true frames."""

    vae: AutoencoderKL
    batch: int = 16

    @torch.no_grad()
    def __call__(self, truth: np.ndarray) -> np.ndarray:
        p = next(self.vae.parameters())
        out = []
        for x in torch.from_numpy(np.ascontiguousarray(truth)).split(self.batch):
            y = self.vae(x.permute(0, 3, 1, 2).to(p) / 127.5 - 1)  # (n, 3, h, w) in about [-1, 1]
            out.append(((y.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu())
        return torch.cat(out).numpy()


def autoencoded(folder: Path, device: str, vae: AutoencoderKL | None = None) -> Autoencoded:
    """The `autoencode:FOLDER` row: FOLDER's VAE (fp32 on the CPU), its decoder replaced by `vae` if given."""
    models, _ = load_models(folder, dtype=torch.float32 if torch.device(device).type == "cpu" else None,
                            device=device)
    return Autoencoded((with_decoder(models, vae, folder) if vae is not None else models).vae)


def model_settings(recorded: dict, steps: int | None, guidance: float | None, window: int | None,
                   folder: Path, scheduler: str | None = None) -> Settings:
    """Settings from a checkpoint's recorded sampling (prediction, schedule, reference, ...) and the flags.

    A recorded key that `Settings` does not know is an error, so an ablation switch (e.g. `reference: false`) is
    never silently dropped."""
    unknown = set(recorded) - {f.name for f in fields(Settings)} - NOT_SAMPLING
    if unknown:
        raise ValueError(f"{folder}: recorded sampling settings {sorted(unknown)} are not known to "
                         f"aa.sampling.pipeline.Settings; this pipeline cannot honour them")
    return with_overrides(Settings(**sampling_fields(recorded)), steps=steps, guidance=guidance, window=window,
                          scheduler=scheduler)


def load_decoder(path: Path, device: str) -> AutoencoderKL:
    """A VAE we wrote (tools/train_vae.py's vae.safetensors with its vae_config.json beside it, or the VAE of a
    native model folder), fp32."""
    cfg = vae_config_beside(path, None)
    if cfg is None:
        raise FileNotFoundError(f"{path.parent}: no vae_config.json or config.json; --vae takes a vae.safetensors "
                                f"written by tools/train_vae.py or one from a native model folder")
    return load_vae(path, cfg, dtype=torch.float32, device=device)


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
                 device: str, vae: AutoencoderKL | None = None, scheduler: str | None = None) -> tuple[Method, dict]:
    """A native checkpoint as a method, and the settings it samples with (JSON-ready, with what it recorded);
    `vae` replaces its VAE for decoding (see with_decoder)."""
    # fp32 on the CPU whatever the file holds (the bundled demo is fp16, which CPU convolutions don't take)
    models, recorded = load_models(folder, dtype=torch.float32 if torch.device(device).type == "cpu" else None,
                                   device=device)
    if vae is not None:
        models = with_decoder(models, vae, folder)
    base = model_settings(recorded, steps, guidance, window, folder, scheduler)

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
            for k in [*metrics.METRICS, *REGION_METRICS, *COLOUR_METRICS]}


def evaluate(methods: dict[str, Method | Autoencoded], clips: list[Clip], seed: int, keep: int = 0,
             progress: bool = True, region_margin: int = 4,
             ) -> tuple[list[dict], dict[str, dict[tuple[str, int], np.ndarray]]]:
    """Run every method on every clip: per-clip records, and each method's frames of the first `keep` clips of
    every split (for the contact sheets), by (split, index). Region metrics grow the boxes by `region_margin`."""
    records, outputs = [], {name: {} for name in methods}
    for clip in tqdm(clips, desc="clips", unit="clip", disable=not progress):
        scores = {}
        for name, method in methods.items():
            if isinstance(method, Autoencoded):
                frames = method(clip.truth)
            else:
                frames = method(clip.reference, clip.poses, seed + clip.index)
            assert frames.shape == clip.truth.shape, f"{name}: got {frames.shape}, expected {clip.truth.shape}"
            scores[name] = metrics.all_metrics(frames, clip.truth)
            if clip.boxes is not None:
                scores[name].update({k: fn(frames, clip.truth, clip.boxes, region_margin)
                                     for k, fn in REGION_METRICS.items()})
            if clip.parts is not None:
                errors = colour.part_colour_errors(frames, clip.truth, clip.parts)
                scores[name].update(colour.summary(errors), parts={k: v["mean"] for k, v in errors.items()})
            if clip.index < keep:
                outputs[name][clip.split, clip.index] = frames
        records.append({"split": clip.split, "video": clip.video, "character": clip.character,
                        "motion": clip.motion, "frames": len(clip.truth), "metrics": scores})
    return records, outputs


def part_means(rows: list[dict]) -> dict[str, float]:
    """Each body part's mean colour error over the clips that scored it (a clip may lack a part, e.g. a hat)."""
    out = {}
    for part in colour.SCORED_PARTS:
        values = [r["parts"][part] for r in rows if part in r.get("parts", {})]
        if values:
            out[part] = float(np.mean(values))
    return out


def summarise(records: list[dict], methods: list[str], splits: list[str]) -> dict:
    """{method: {split or 'overall': {'clips': n, metric: mean, 'parts': {part: mean}}}}; overall weighs every
    clip equally; 'parts' (per body part part ΔE, where the data has label maps) says where the colour error is."""
    out = {}
    for m in methods:
        out[m] = {}
        for split in [*splits, "overall"]:
            rows = [r["metrics"][m] for r in records if split in ("overall", r["split"])]
            parts = part_means(rows)
            out[m][split] = {"clips": len(rows), **mean_metrics(rows), **({"parts": parts} if parts else {})}
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


def part_table(summary: dict) -> str:
    """Part ΔE per body part as a markdown table, one row per (method, split) that has any ('' if none has)."""
    rows = [(m, split, row["parts"]) for m, splits in summary.items() for split, row in splits.items()
            if row.get("parts")]
    if not rows:
        return ""
    parts = [p for p in colour.SCORED_PARTS if any(p in scores for _, _, scores in rows)]
    lines = ["| method | split | " + " | ".join(f"{p} ΔE ↓" for p in parts) + " |", "|---|---|" + "---:|" * len(parts)]
    for m, split, scores in rows:
        lines.append(f"| {m} | {split} | " + " | ".join(_fmt("part_de", scores[p]) if p in scores else ""
                                                          for p in parts) + " |")
    return "\n".join(lines) + "\n"


def _fmt(metric: str, value: float) -> str:
    """PSNRs to 0.01 dB, the others to 4 decimals."""
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return f"{value:.2f}" if metric.endswith("psnr") or metric in COLOUR_METRICS else f"{value:.4f}"


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
