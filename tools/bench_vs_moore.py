"""GPU evidence in one command: our `animate()` beside Moore-AnimateAnyone's own `Pose2VideoPipeline` on the same
random weights in one process, then ours alone (peak memory per option beside the estimator's figure, eager vs
`--compile`, real training steps at SD size). Results are appended to --out as JSON lines as they come.

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

    python3 -m pip install -q --no-index --no-deps --target /tmp/side .gpu/whl/*.whl && python3 \
        tools/bench_vs_moore.py --size full --moore-src .gpu/moore --side /tmp/side --out $OUT/results.jsonl
 The full run takes about 7
minutes on one H200 with the default budgets (at most their sum, 7.5 minutes, plus start-up).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOLDEN = ROOT / "tests" / "data" / "golden_moore"
PARTS = ("moore", "ours", "memory", "compile", "train")
OPTIONS = {"default": {}, "split-guidance": {"split_guidance": True}, "offload": {"offload": True},
           "offload+split-guidance": {"offload": True, "split_guidance": True}}
NA = "n/a on CPU"


@dataclass(frozen=True)
class Size:
    """What one --size runs: the video of the comparison, and the training runs."""

    model: str  # architecture of the ours-alone parts (aa.models.config.ARCHITECTURES)
    frames: int
    width: int
    height: int
    steps: int
    window: int
    overlap: int
    repeats: int  # timed runs of each pipeline after the warm-up
    memory_steps: int  # the peak does not grow with the steps: a few are enough
    train: tuple[tuple[int, int, int], ...]  # (stage, batch, frames) per training run
    train_size: tuple[int, int]  # (width, height)
    train_iters: int
    budgets: dict[str, int] = field(default_factory=dict)  # seconds per part


SIZES = {
    "full": Size("sd15", 24, 512, 768, 20, 24, 4, repeats=2, memory_steps=3, train=((2, 1, 24), (1, 4, 1)),
                 train_size=(512, 512), train_iters=3,
                 budgets={"moore": 140, "ours": 40, "memory": 80, "compile": 120, "train": 70, "estimate": 200}),
    # the golden's sizes (tools/make_golden_moore.py) for Moore's part, config.tiny() for ours alone
    "tiny": Size("tiny", 2, 32, 32, 1, 8, 2, repeats=2, memory_steps=1, train=((2, 1, 2), (1, 2, 1)),
                 train_size=(32, 32), train_iters=1,
                 budgets={"moore": 120, "ours": 60, "memory": 60, "compile": 300, "train": 60, "estimate": 60}),
}


# ---------------------------------------------------------------------------------------------------- results
def append(path: Path, record: dict) -> None:
    """One JSON line appended with a single write (O_APPEND): lines from several processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def gib(nbytes: int | None) -> float | str:
    return NA if nbytes is None else round(nbytes / 2**30, 3)


class Device:
    """Timing and memory on one device; memory figures are None off CUDA."""

    def __init__(self, name: str) -> None:
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"
        self.dtype = torch.float16 if self.cuda else torch.float32  # the CPU runs fp32, as sample.py

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def allocated(self) -> int | None:
        return torch.cuda.memory_allocated(self.device) if self.cuda else None

    def reset_peak(self) -> None:
        if self.cuda:
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int | None:
        return torch.cuda.max_memory_allocated(self.device) if self.cuda else None

    def reserved_peak(self) -> int | None:
        return torch.cuda.max_memory_reserved(self.device) if self.cuda else None

    def timed(self, fn) -> tuple[Any, float, int | None]:
        """(fn(), seconds, peak bytes above what was allocated before)."""
        base = self.allocated()
        self.reset_peak()
        self.sync()
        t = time.perf_counter()
        out = fn()
        self.sync()
        seconds = time.perf_counter() - t
        return out, seconds, None if base is None else self.peak() - base


def pixel_difference(a: np.ndarray, b: np.ndarray) -> dict:
    """Largest and mean |a - b| of two uint8 videos, in 8-bit levels."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"pixel_max": int(d.max()), "pixel_mean": round(float(d.mean()), 4)}


# ---------------------------------------------------------------------------------------------------- inputs
def inputs(frames: int, width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random reference (uint8 (height, width, 3)) and pose-like frames: coloured bars on black that move
    (uint8 (frames, height, width, 3))."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 6, 4, generator=g)
    ref = torch.nn.functional.interpolate(low, size=(height, width), mode="bicubic", align_corners=False)[0]
    ref = (ref.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    rng = np.random.default_rng(seed)
    poses = np.zeros((frames, height, width, 3), np.uint8)
    bars = [(rng.integers(0, height - 8), rng.integers(0, width // 2), rng.integers(64, 256, 3)) for _ in range(6)]
    for i in range(frames):
        for k, (y, x, colour) in enumerate(bars):
            y0 = int((y + 2 * i * (k + 1)) % (height - 4))
            poses[i, y0:y0 + 4, x:x + width // 3] = colour
    return ref, poses


@torch.no_grad()
def randomize(models, seed: int = 0) -> None:
    """Every parameter drawn afresh on its device, as tools/make_golden_moore.py's `randomize` draws them (weights
    N(0, 1/fan_in), norm scales 1 + N(0, 0.2^2), biases N(0, 0.1^2); a fresh model's zero output layers would make the
    temporal layers and the Pose Guider do nothing), rounded to fp16 so the fp16 files hold them exactly."""
    for k, net in enumerate(models.modules().values()):
        g = None
        for name, p in net.named_parameters():
            if g is None:
                g = torch.Generator(p.device).manual_seed(seed + k)
            r = torch.randn(p.shape, generator=g, device=p.device)
            if p.ndim >= 2:
                r = r / p[0].numel() ** 0.5
            elif name.endswith("weight") and "norm" in name:
                r = 1 + 0.2 * r
            else:
                r = 0.1 * r
            p.copy_(r.half())


def random_models(cfg, dev: Device):
    """Our five networks with random weights, on the device in its dtype, readied as sample.py readies them."""
    from aa.models.bundle import Models
    from aa.sampling.plan import prepare_unet
    with dev.device:
        models = Models.build(cfg)
    randomize(models)
    models.to(dev.device, dev.dtype)
    prepare_unet(models.unet, models.pose_guider)
    return models


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
    reference, poses = inputs(frames, width, height)

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


def part_ours(a: argparse.Namespace, size: Size, dev: Device, emit) -> None:
    """Our pipeline alone, the release's settings at the comparison's size: a warm-up, then timed runs."""
    from aa.models.config import ARCHITECTURES
    from aa.sampling import pipeline
    models = random_models(ARCHITECTURES[size.model](), dev)
    reference, poses = inputs(size.frames, size.width, size.height)
    settings = replace(pipeline.moore_settings(), steps=size.steps, guidance=3.5, window=size.window,
                       overlap=size.overlap)

    def run(steps: int) -> np.ndarray:
        return pipeline.animate(models, reference, poses, replace(settings, steps=steps), width=size.width,
                                height=size.height, seed=42, progress=False)
    run(1)
    runs = [dev.timed(lambda: run(size.steps)) for _ in range(size.repeats)]
    emit(result="ours alone", model=size.model, frames=size.frames, width=size.width, height=size.height,
         steps=size.steps, dtype=str(dev.dtype).removeprefix("torch."), seconds=[round(r[1], 3) for r in runs],
         working_gib=gib(None if runs[0][2] is None else max(r[2] for r in runs)))


def part_memory(a: argparse.Namespace, size: Size, dev: Device, emit) -> None:
    """Our absolute peak (weights included) per memory option, as `sample.py` runs them."""
    from aa.models.config import ARCHITECTURES
    from aa.sampling import pipeline
    models = random_models(ARCHITECTURES[size.model](), dev)
    reference, poses = inputs(size.frames, size.width, size.height)
    pipeline.animate(models, reference, poses[:size.window], pipeline.Settings(steps=1), width=size.width,
                     height=size.height, progress=False)  # warm-up
    for option, changes in OPTIONS.items():
        models.to(dev.device)  # an --offload run leaves the encoders on the CPU; each run starts from all on device
        settings = replace(pipeline.Settings(), steps=size.memory_steps, guidance=3.5, window=size.window,
                           overlap=size.overlap, **changes)
        dev.reset_peak()
        _, seconds, _ = dev.timed(lambda s=settings: pipeline.animate(models, reference, poses, s, width=size.width,
                                                                      height=size.height, progress=False))
        emit(result="inference peak", option=option, frames=size.frames, width=size.width, height=size.height,
             steps=size.memory_steps, peak_gib=gib(dev.peak()), reserved_peak_gib=gib(dev.reserved_peak()),
             seconds=round(seconds, 3))


def part_compile(a: argparse.Namespace, size: Size, dev: Device, emit) -> None:
    """Eager vs the compiled UNet (`sample.py --compile`), our default settings at the comparison's size."""
    import torch._dynamo.utils as dynamo_utils

    from aa.models.config import ARCHITECTURES
    from aa.sampling import pipeline
    from aa.sampling.plan import prepare_unet
    models = random_models(ARCHITECTURES[size.model](), dev)
    reference, poses = inputs(size.frames, size.width, size.height)
    settings = replace(pipeline.Settings(), steps=size.steps, guidance=3.5, window=size.window, overlap=size.overlap)

    def run() -> np.ndarray:
        return pipeline.animate(models, reference, poses, settings, width=size.width, height=size.height, seed=42,
                                progress=False)
    run()  # warm-up
    eager = [dev.timed(run) for _ in range(size.repeats)]
    emit(result="eager", seconds=[round(e[1], 3) for e in eager])
    prepare_unet(models.unet, models.pose_guider, compile=True)
    first = dev.timed(run)
    compiled = [dev.timed(run) for _ in range(size.repeats)]
    best_eager, best_compiled = min(e[1] for e in eager), min(c[1] for c in compiled)
    counters = {k: dict(v) for k, v in dynamo_utils.counters.items() if k in ("stats", "recompiles", "graph_break")}
    emit(result="compile", eager_s=[round(e[1], 3) for e in eager], first_compiled_run_s=round(first[1], 2),
         compile_s=round(first[1] - best_eager, 2), compiled_s=[round(c[1], 3) for c in compiled],
         speedup=round(best_eager / best_compiled, 3), **pixel_difference(eager[-1][0], compiled[-1][0]),
         recompiles=sum(counters.get("recompiles", {}).values()),
         graph_breaks=sum(counters.get("graph_break", {}).values()), dynamo=counters)


def train_config(size: Size, stage: int, batch: int, frames: int):
    """The training run measured: gradient checkpointing, bf16 autocast, frozen weights in bf16 (fused AdamW is
    what the Trainer takes on CUDA); every sample conditional (the ReferenceNet runs for all: the worst case)."""
    from aa.training.config import TrainConfig
    return TrainConfig(model=size.model, stage=stage, batch_size=batch, frames=frames, width=size.train_size[0],
                       height=size.train_size[1], gradient_checkpointing=True, mixed_precision="bf16",
                       frozen_dtype="bf16", uncond_rate=0.0)


def part_train(a: argparse.Namespace, size: Size, dev: Device, emit) -> None:
    """Real training steps (`aa.training.loop.Trainer`) on random inputs shaped like the data's."""
    from aa.eval.train_memory import batch, build
    from aa.training.loop import Trainer
    for stage, batch_size, frames in size.train:
        cfg = train_config(size, stage, batch_size, frames)
        dev.reset_peak()
        models = build(cfg, dev.device)
        trainer = Trainer(models, cfg, 1, dev.device)
        times, loss = [], None
        for k in range(size.train_iters):
            micro = batch(cfg, models, dev.device, k)
            dev.sync()
            t = time.perf_counter()
            loss = trainer.step(iter([micro]))
            dev.sync()
            times.append(time.perf_counter() - t)
            del micro
        emit(result="train peak", stage=stage, batch=batch_size, frames=cfg.clip_frames, width=cfg.width,
             height=cfg.height, options="checkpointing bf16 frozen-bf16 fused", peak_gib=gib(dev.peak()),
             reserved_peak_gib=gib(dev.reserved_peak()), step_s=[round(x, 3) for x in times], loss=loss)
        del trainer, models
        gc.collect()


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


RUNNERS = {"moore": part_moore, "ours": part_ours, "memory": part_memory, "compile": part_compile,
           "train": part_train, "estimate": part_estimate}


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


class Part:
    """A part running in a child process under its time limit; stderr kept for the reason of a failure."""

    def __init__(self, a: argparse.Namespace, name: str, budget: float, logs: Path) -> None:
        self.name, self.budget, self.start = name, budget, time.monotonic()
        self.stderr = logs / f"{name}.stderr"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, *a.forward]
        # TMPDIR: the weights a part writes (5 GB at full size) go with the command's temporary folder
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TMPDIR": str(logs)}
        with open(self.stderr, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                         start_new_session=True)  # its own group: killed with its workers

    def finish(self) -> dict:
        """Wait for the part within its budget (killing it past it); its status line."""
        try:
            code = self.proc.wait(timeout=max(0.0, self.budget - (time.monotonic() - self.start)))
        except subprocess.TimeoutExpired:
            self.kill()
            return self.status("timeout", f"past its budget of {self.budget:g} s")
        if code == 0:
            return self.status("ok", "")
        lines = [x for x in self.stderr.read_text(errors="replace").splitlines() if x.strip()]
        return self.status("error", f"exit code {code}: {lines[-1] if lines else 'no output'}")

    def kill(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=10)
                return
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue

    def status(self, status: str, reason: str) -> dict:
        return {"part": self.name, "status": status, "reason": reason,
                "seconds": round(time.monotonic() - self.start, 1)}


def environment(a: argparse.Namespace) -> dict:
    """Date, GPU (nvidia-smi's line, without touching CUDA here), torch and the commit."""
    def run(cmd: list[str]) -> str | None:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=ROOT, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() or None if r.returncode == 0 else None
    return {"part": "env", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "size": a.size,
            "device": a.device, "parts": a.parts, "torch": torch.__version__, "python": sys.version.split()[0],
            "gpu": run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]),
            "commit": run(["git", "rev-parse", "--short", "HEAD"]),
            "dirty": bool(run(["git", "status", "--porcelain", "--untracked-files=no"]))}


def summary(out: Path) -> dict:
    """The headline figures of the results file: the time ratio, each measured peak beside its estimate, compile."""
    lines = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    found = lambda part, result: [r for r in lines if r.get("part") == part and r.get("result") == result]
    s: dict[str, Any] = {"part": "summary"}
    for r in found("moore", "comparison"):
        s["ours_over_moore_time"] = r["ratio_median"]
        s["working_gib"] = {"ours": r["ours_working_gib"], "moore": r["moore_working_gib"]}
        s["pixel_max"] = r["pixel_max"]
    estimates = {r["option"]: r["peak_gib"] for r in found("estimate", "inference estimate")}
    s["inference_peak_gib"] = {r["option"]: {"measured": r["peak_gib"], "estimate": estimates.get(r["option"])}
                               for r in found("memory", "inference peak")}
    train = {(r["stage"], r["batch"], r["frames"]): r["total_gib"] for r in found("estimate", "train estimate")}
    s["train_peak_gib"] = {f"stage {r['stage']} batch {r['batch']} frames {r['frames']}":
                           {"measured": r["peak_gib"], "estimate": train.get((r["stage"], r["batch"], r["frames"]))}
                           for r in found("train", "train peak")}
    for r in found("compile", "compile"):
        s["compile"] = {k: r[k] for k in ("compile_s", "speedup", "pixel_max", "recompiles", "graph_breaks")}
    return s


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
                        + "; ".join(f"{k}: " + ", ".join(f"{p}={s}" for p, s in v.budgets.items())
                                    for k, v in SIZES.items()) + ")")
    p.add_argument("--child", choices=sorted(RUNNERS), help="internal: run one part in this process (the command "
                                                            "runs each part so, under its budget)")
    a = p.parse_args(argv)
    a.parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    unknown = [x for x in a.parts if x not in PARTS]
    if unknown:
        p.error(f"--parts: unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    a.budgets = dict(SIZES[a.size].budgets)
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
    append(a.out, environment(a))
    statuses = []
    with tempfile.TemporaryDirectory() as logs:
        log_dir = Path(logs)
        needs_estimate = "memory" in a.parts or "train" in a.parts
        background = Part(a, "estimate", a.budgets["estimate"], log_dir) if needs_estimate else None
        for name in a.parts:
            reason = skip_reason(a, name)
            if reason is not None:
                status = {"part": name, "status": "skipped", "reason": reason, "seconds": 0.0}
            else:
                part = Part(a, name, a.budgets[name], log_dir)
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
