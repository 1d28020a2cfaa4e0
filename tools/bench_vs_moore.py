"""GPU evidence in one command: our `animate()` beside Moore-AnimateAnyone's own `Pose2VideoPipeline` on the same
random weights in one process, then ours alone (peak memory per option beside the estimator's figure, eager vs
`--compile`, real training steps at SD size). Results are appended to --out as JSON lines as they come. Our side's
measuring is aa/eval/speed.py, the parts' processes and the results file aa/eval/runs.py; Moore's side is here.

    python tools/bench_vs_moore.py --size full --moore-src .gpu/moore --side /tmp/side --out $OUT/results.jsonl
    python tools/bench_vs_moore.py --size tiny --device cpu --parts ours,memory,train --out /tmp/r.jsonl  # dry run

Parts (--parts, all by default), each run in a child process under its own time limit (--budget PART=SECONDS; one
past it is killed and recorded as timed out, and the next part starts):
- moore: random SD 1.5 + AnimateDiff weights (--size full; tests/data/golden_moore at --size tiny) written in the
  release layout, loaded by both pipelines in one process, fp16 on CUDA, 24 frames 512x768, 20 DDIM steps, guidance
  3.5, the release's settings (`pipeline.moore_settings()`): one warm-up run each, then timed runs alternating which
  goes first; the working peak of each (device memory above what was allocated before the run, the weights of both
  included there); the pixel difference of the two videos from the same initial noise (Moore's, recorded).
- ours: our pipeline alone at the same settings (a time when Moore's side is not at hand).
- memory: the absolute peak (weights included) of the default, --split-guidance, --offload and both.
- compile: eager vs `unet.compile()` (`sample.py --compile`): compile time, speed-up, pixel difference, dynamo's
  recompile and graph-break counters.
- train: real `Trainer` steps at 512x512, stage 2 with 24 frames and stage 1 with batch 4, gradient checkpointing,
  bf16 autocast, frozen weights in bf16, fused AdamW: absolute peak and step times.
- estimate (with memory or train, alongside the others: it needs no device): the meta-device estimates of
  tools/estimate_memory.py and aa/eval/train_memory.py for the same runs. A last line, part "summary", puts each
  measured peak beside its estimate.
Every requested part gets one status line: {"part", "status": ok | timeout | skipped | error, "reason", "seconds"}.
Peak memory is "n/a on CPU" off CUDA (a CPU dry run checks the code paths, not numbers).

This needs no PyAV (nothing it imports reads or writes video). Moore's side needs the release source (`git archive`
of github:MooreThreads/Moore-AnimateAnyone, the `src/` and `configs/` folders) and the libraries of its day, kept on
a side path so that they never meet ours (the GPU machine's own transformers is 5.x). Wheels for Python 3.12 fetched
where pip has a network, carried to the GPU machine and installed there:

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .gpu/whl \\
        diffusers==0.24.0 transformers==4.36.2 huggingface_hub==0.20.3 tokenizers==0.15.2 accelerate==0.25.0 \\
        importlib_metadata==7.0.1
    python3 -m pip install -q --no-index --no-deps --target /tmp/side .gpu/whl/*.whl    # on the GPU machine

(accelerate 0.25: transformers 4.36 imports names that accelerate 1.x dropped; importlib_metadata: diffusers 0.24
needs it; the rest of their needs, requests, regex, pyyaml, safetensors, are there.) The release source goes beside
them: `git -C <a Moore-AnimateAnyone clone> archive HEAD src configs | tar -x -C .gpu/moore`. With `.gpu` ignored
(`echo /.gpu/ >> .git/info/exclude`) and carried, the GPU machine's whole run is one command:

    python3 -m pip install -q --no-index --no-deps --target /tmp/side .gpu/whl/*.whl && python3 \\
        tools/bench_vs_moore.py --size full --moore-src .gpu/moore --side /tmp/side --out $OUT/results.jsonl
 The full run takes about 7
minutes on one H200 with the default budgets (at most their sum, 7.5 minutes, plus start-up).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aa.eval.runs import Part, append, environment, summary
from aa.eval.speed import (
    OPTIONS,
    Device,
    Size,
    eager_vs_compiled,
    gib,
    memory_peaks,
    ours_alone,
    pixel_difference,
    random_inputs,
    randomize,
    train_config,
    training_steps,
)

GOLDEN = ROOT / "tests" / "data" / "golden_moore"
PARTS = ("moore", "ours", "memory", "compile", "train")
SIZES = {
    "full": Size("sd15", 24, 512, 768, 20, 24, 4, repeats=2, memory_steps=3, train=((2, 1, 24), (1, 4, 1)),
                 train_size=(512, 512), train_iters=3),
    # the golden's sizes (tools/make_golden_moore.py) for Moore's part, config.tiny() for ours alone
    "tiny": Size("tiny", 2, 32, 32, 1, 8, 2, repeats=2, memory_steps=1, train=((2, 1, 2), (1, 2, 1)),
                 train_size=(32, 32), train_iters=1),
}
BUDGETS = {  # seconds per part, per --size
    "full": {"moore": 140, "ours": 40, "memory": 80, "compile": 120, "train": 70, "estimate": 200},
    "tiny": {"moore": 120, "ours": 60, "memory": 60, "compile": 300, "train": 60, "estimate": 60},
}


# ---------------------------------------------------------------------------------------------------- weights
def vae_config_json(cfg, sample_size: int) -> dict:
    """diffusers' AutoencoderKL config.json for our VAE config."""
    levels = len(cfg.block_out_channels)
    return {"_class_name": "AutoencoderKL", "act_fn": "silu", "in_channels": 3, "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * levels, "up_block_types": ["UpDecoderBlock2D"] * levels,
            "block_out_channels": list(cfg.block_out_channels), "layers_per_block": cfg.layers_per_block,
            "latent_channels": cfg.latent_channels, "norm_num_groups": cfg.norm_groups, "sample_size": sample_size,
            "scaling_factor": cfg.scaling_factor}


def clip_config_json(cfg) -> dict:
    """transformers' CLIPVisionModelWithProjection config.json for our CLIP config (quick_gelu, as ViT-L/14)."""
    return {"architectures": ["CLIPVisionModelWithProjection"], "model_type": "clip_vision_model",
            "hidden_size": cfg.width, "intermediate_size": cfg.mlp_dim, "num_hidden_layers": cfg.layers,
            "num_attention_heads": cfg.heads, "image_size": cfg.image_size, "patch_size": cfg.patch_size,
            "projection_dim": cfg.projection_dim, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}


def write_release_weights(folder: Path, cfg, width: int, dev: Device) -> None:
    """Random weights in the release layout (denoising_unet.pth, reference_unet.pth, motion_module.pth,
    pose_guider.pth, fp16 as MusePose's files) plus a diffusers vae/ and a transformers image_encoder/ folder: our
    attribute names are theirs, so the state dicts are written as they are."""
    from safetensors.torch import save_file

    from aa.models.bundle import Models
    from aa.weights.native import export_moore
    with dev.device:
        models = Models.build(cfg)
    randomize(models)
    models.to(torch.float16)
    export_moore(models, folder)
    for sub, net, name, config in (("vae", models.vae, "diffusion_pytorch_model.safetensors",
                                    vae_config_json(cfg.vae, width)),
                                   ("image_encoder", models.image_encoder, "model.safetensors",
                                    clip_config_json(cfg.clip))):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(folder / sub / name))
        (folder / sub / "config.json").write_text(json.dumps(config, indent=2))


# ---------------------------------------------------------------------------------------------------- parts
def part_moore(a: argparse.Namespace, size: Size, dev: Device, emit) -> None:
    """Ours and the release's pipeline on the same weights and noise, alternated; see the module docstring."""
    sys.path[:0] = [str(a.side), str(a.moore_src)]  # Moore's libraries before any others
    import yaml
    from diffusers import AutoencoderKL, DDIMScheduler
    from PIL import Image
    from src.models.pose_guider import PoseGuider
    from src.models.unet_2d_condition import UNet2DConditionModel
    from src.models.unet_3d import UNet3DConditionModel
    from src.pipelines.pipeline_pose2vid_long import Pose2VideoPipeline
    from transformers import CLIPVisionModelWithProjection

    from aa.models.config import ARCHITECTURES, from_dict
    from aa.sampling import pipeline
    from aa.sampling.load import load_for_sampling
    from aa.sampling.plan import prepare_unet
    from tools import make_golden_moore as golden

    infer = yaml.safe_load((a.moore_src / "configs" / "inference" / "inference_v2.yaml").read_text())
    additional, scheduler_kwargs = infer["unet_additional_kwargs"], infer["noise_scheduler_kwargs"]
    if a.size == "tiny":  # the golden's tiny model and sizes
        folder, cfg = GOLDEN, from_dict(json.loads((GOLDEN / "config.json").read_text()))
        frames, width, height, steps, window, overlap = 4, golden.WIDTH, golden.HEIGHT, golden.STEPS, \
            golden.WINDOW, golden.OVERLAP
    else:
        folder, cfg = Path(tempfile.mkdtemp(prefix="bench_vs_moore_")) / "weights", ARCHITECTURES[size.model]()
        frames, width, height, steps = size.frames, size.width, size.height, size.steps
        window, overlap = size.window, size.overlap
        t = time.perf_counter()
        write_release_weights(folder, cfg, width, dev)
        emit(result="weights written", folder=str(folder), seconds=round(time.perf_counter() - t, 1))
    reference, poses = random_inputs(frames, width, height)

    base = dev.allocated()
    ours, _, _ = load_for_sampling(moore=folder, vae=folder / "vae", clip=folder / "image_encoder", cfg=cfg,
                                   dtype=dev.dtype, device=dev.device)
    prepare_unet(ours.unet, ours.pose_guider)
    ours_weights = None if base is None else dev.allocated() - base

    # the release's models, loaded as its scripts/pose2vid.py loads them (UNet3D: the SD config's blocks made 3D,
    # with the yaml's unet_additional_kwargs; motion modules from their own file)
    unet_cfg = golden.unet_config_json(cfg.unet)
    unet3d_cfg = dict(unet_cfg, _class_name="UNet3DConditionModel",
                      down_block_types=[b.replace("2D", "3D") for b in unet_cfg["down_block_types"]],
                      up_block_types=[b.replace("2D", "3D") for b in unet_cfg["up_block_types"]],
                      mid_block_type="UNetMidBlock3DCrossAttn")
    base = dev.allocated()
    with dev.device:
        reference_unet = UNet2DConditionModel.from_config(unet_cfg)
        denoising_unet = UNet3DConditionModel.from_config(unet3d_cfg, **additional)
        guider = PoseGuider(cfg.unet.block_out_channels[0], block_out_channels=tuple(cfg.pose_guider.channels))
    missing = {}
    for net, files in ((reference_unet, ["reference_unet.pth"]),
                       (denoising_unet, ["denoising_unet.pth", "motion_module.pth"]), (guider, ["pose_guider.pth"])):
        state = {}
        for f in files:
            state.update(torch.load(folder / f, map_location="cpu", weights_only=True))
        result = net.load_state_dict(state, strict=False)
        assert not result.unexpected_keys, f"{files}: keys the release's model lacks: {result.unexpected_keys[:5]}"
        missing[files[0]] = sorted({k.split(".")[0] for k in result.missing_keys})  # left at their init
    pipe = Pose2VideoPipeline(
        vae=AutoencoderKL.from_pretrained(folder / "vae").to(dev.device, dev.dtype),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder").to(dev.device,
                                                                                                  dev.dtype),
        reference_unet=reference_unet.to(dev.device, dev.dtype),
        denoising_unet=denoising_unet.to(dev.device, dev.dtype),
        pose_guider=guider.to(dev.device, dev.dtype), scheduler=DDIMScheduler(**scheduler_kwargs),
    ).to(dev.device, dtype=dev.dtype)
    pipe.set_progress_bar_config(disable=True)
    moore_weights = None if base is None else dev.allocated() - base
    settings = replace(pipeline.moore_settings(), steps=steps, guidance=3.5, window=window, overlap=overlap)
    ref_image, pose_images = Image.fromarray(reference), [Image.fromarray(p) for p in poses]

    def run_moore(n: int) -> np.ndarray:
        with torch.no_grad():
            v = pipe(ref_image, pose_images, width, height, frames, n, 3.5, generator=torch.manual_seed(42),
                     context_frames=window, context_overlap=overlap).videos  # (1, 3, f, h, w) in [0, 1]
        return (v[0].permute(1, 2, 3, 0).float().clamp(0, 1) * 255).round().byte().cpu().numpy()

    recorder = golden.Recorder(pipe, trace=False)  # keeps the z_T the release draws, for ours to start from
    t = time.perf_counter()
    run_moore(1)  # warm-up: kernels, allocator
    z = recorder.close()["latents"][0].permute(1, 0, 2, 3).float().cpu()  # (1, c, f, h, w) -> (f, c, h, w)

    def run_ours(n: int) -> np.ndarray:
        return pipeline.animate(ours, reference, poses, replace(settings, steps=n), width=width, height=height,
                                latents=z, progress=False)

    run_ours(1)
    emit(result="warm-up", seconds=round(time.perf_counter() - t, 2))
    times: dict[str, list[float]] = {"ours": [], "moore": []}
    working: dict[str, int | None] = {"ours": None, "moore": None}
    videos: dict[str, np.ndarray] = {}
    for r in range(size.repeats):
        order = (("moore", run_moore), ("ours", run_ours))
        for name, fn in order if r % 2 == 0 else order[::-1]:
            videos[name], seconds, peak = dev.timed(lambda fn=fn: fn(steps))
            times[name].append(seconds)
            working[name] = peak if working[name] is None else max(working[name], peak)
        emit(result="round", round=r, first="moore" if r % 2 == 0 else "ours", ours_s=round(times["ours"][-1], 3),
             moore_s=round(times["moore"][-1], 3))
    emit(result="comparison", frames=frames, width=width, height=height, steps=steps, guidance=3.5, window=window,
         overlap=overlap, dtype=str(dev.dtype).removeprefix("torch."),
         ours_s=[round(x, 3) for x in times["ours"]], moore_s=[round(x, 3) for x in times["moore"]],
         ratio_median=round(statistics.median(o / m for o, m in zip(times["ours"], times["moore"])), 3),
         ours_weights_gib=gib(ours_weights), moore_weights_gib=gib(moore_weights),
         ours_working_gib=gib(working["ours"]), moore_working_gib=gib(working["moore"]),
         **pixel_difference(videos["ours"], videos["moore"]), moore_missing_keys=missing)


def part_estimate(a: argparse.Namespace, size: Size, dev: Device, emit) -> None:
    """The estimators' figures for the memory and train parts' runs (meta device: no device memory used)."""
    torch.set_num_threads(min(4, torch.get_num_threads()))  # leave the cores to the parts running beside
    from aa.eval.train_memory import report
    from tools.estimate_memory import estimate
    if "memory" in a.parts:
        for option, changes in OPTIONS.items():
            r = estimate(size.model, size.frames, size.width, size.height, torch.float16, 3.5, size.window,
                         offload=changes.get("offload", False), split_guidance=changes.get("split_guidance", False))
            emit(result="inference estimate", option=option, frames=size.frames, width=size.width,
                 height=size.height, **{f"{k}_gib": gib(v) for k, v in r.items()})
    if "train" in a.parts:
        for stage, batch_size, frames in size.train:
            cfg = train_config(size, stage, batch_size, frames)
            r = report(cfg, "fused", "bf16", "no")
            emit(result="train estimate", stage=stage, batch=batch_size, frames=cfg.clip_frames,
                 **{f"{k.replace(' ', '_')}_gib": round(v, 3) for k, v in r.items()})


OURS = {"ours": ours_alone, "memory": memory_peaks, "compile": eager_vs_compiled, "train": training_steps}
RUNNERS = {"moore": part_moore, "estimate": part_estimate}  # the parts that need this command's arguments


# ---------------------------------------------------------------------------------------------------- driver
def child(a: argparse.Namespace) -> int:
    """Run one part in this process, appending its measurement lines to --out."""
    size, dev = SIZES[a.size], Device(a.device)
    torch.manual_seed(0)

    def emit(**record) -> None:
        append(a.out, {"part": a.child, **record})
    if a.child != "estimate":
        emit(result="device", name=torch.cuda.get_device_name(dev.device) if dev.cuda else "cpu",
             dtype=str(dev.dtype).removeprefix("torch."))
    if a.child in OURS:
        OURS[a.child](size, dev, emit)
    else:
        RUNNERS[a.child](a, size, dev, emit)
    return 0


def skip_reason(a: argparse.Namespace, part: str) -> str | None:
    """Why a requested part cannot run here, or None."""
    if part == "moore":
        if a.moore_src is None or a.side is None:
            return "--moore-src/--side not given"
        if not (a.moore_src / "src" / "pipelines" / "pipeline_pose2vid_long.py").is_file():
            return f"{a.moore_src}: not a Moore-AnimateAnyone source tree (no src/pipelines/pipeline_pose2vid_long.py)"
        if not (a.side / "diffusers").is_dir():
            return f"{a.side}: no diffusers there (see the install commands in this tool's docstring)"
    return None


def start(a: argparse.Namespace, name: str, logs: Path) -> Part:
    """This command running part `name` alone in a child process, under the part's budget."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, *a.forward]
    return Part(name, cmd, a.budgets[name], logs, ROOT)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="full",
                   help="full: SD 1.5 at 512x768, 24 frames, 20 steps (a GPU); tiny: the tiny test models (a CPU "
                        "dry run of the code paths)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default: cuda if available); off CUDA peak memory is recorded as n/a")
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated parts to run, in this order: {', '.join(PARTS)} (default: all)")
    p.add_argument("--out", type=Path, default=Path("results.jsonl"),
                   help="JSON-lines results file, appended to (default: results.jsonl)")
    p.add_argument("--moore-src", type=Path,
                   help="Moore-AnimateAnyone source tree (its src/ and configs/), for the moore part")
    p.add_argument("--side", type=Path,
                   help="folder with Moore's libraries (diffusers 0.24 ...; pip install --target, see above), for "
                        "the moore part")
    p.add_argument("--budget", action="append", default=[], metavar="PART=SECONDS",
                   help="time limit of one part (repeatable; defaults per --size: "
                        + "; ".join(f"{k}: " + ", ".join(f"{p}={s}" for p, s in v.items())
                                    for k, v in BUDGETS.items()) + ")")
    p.add_argument("--child", choices=sorted([*OURS, *RUNNERS]),
                   help="internal: run one part in this process (the command runs each part so, under its budget)")
    a = p.parse_args(argv)
    a.parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    unknown = [x for x in a.parts if x not in PARTS]
    if unknown:
        p.error(f"--parts: unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    a.budgets = dict(BUDGETS[a.size])
    for item in a.budget:
        name, _, seconds = item.partition("=")
        if name not in a.budgets or not seconds.replace(".", "", 1).isdigit():
            p.error(f"--budget {item}: expected PART=SECONDS with PART one of {', '.join(a.budgets)}")
        a.budgets[name] = float(seconds)
    a.forward = ["--size", a.size, "--device", a.device, "--parts", ",".join(a.parts), "--out", str(a.out.resolve())]
    for flag, value in (("--moore-src", a.moore_src), ("--side", a.side)):
        if value is not None:
            a.forward += [flag, str(value.resolve())]
    if a.moore_src is not None:
        a.moore_src = a.moore_src.resolve()
    if a.side is not None:
        a.side = a.side.resolve()
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.child:
        return child(a)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    append(a.out, environment(ROOT, size=a.size, device=a.device, parts=a.parts))
    statuses = []
    with tempfile.TemporaryDirectory() as logs:
        log_dir = Path(logs)
        needs_estimate = "memory" in a.parts or "train" in a.parts
        background = start(a, "estimate", log_dir) if needs_estimate else None
        for name in a.parts:
            reason = skip_reason(a, name)
            if reason is not None:
                status = {"part": name, "status": "skipped", "reason": reason, "seconds": 0.0}
            else:
                part = start(a, name, log_dir)
                status = part.finish()
                with open(a.out.with_suffix(".log"), "a") as log:  # every part's output, for a failure's details
                    log.write(f"==== {name}: {status['status']} {status['reason']}\n{part.stderr.read_text()}")
            append(a.out, status)
            statuses.append(status)
            print(f"{name}: {status['status']} {status['reason']} ({status['seconds']} s)", flush=True)
        if background is not None:
            status = background.finish()
            with open(a.out.with_suffix(".log"), "a") as log:
                log.write(f"==== estimate: {status['status']} {status['reason']}\n{background.stderr.read_text()}")
            append(a.out, status)
            statuses.append(status)
            print(f"estimate: {status['status']} {status['reason']} ({status['seconds']} s)", flush=True)
    s = summary(a.out)
    append(a.out, s)
    print(json.dumps(s, indent=1))
    return 0 if all(x["status"] in ("ok", "skipped") for x in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
