"""Time and peak device memory of our pipeline and of real training steps, on random weights at a given size (the
measuring behind tools/bench_vs_moore.py): our pipeline alone, its peak per memory option, eager vs a compiled UNet,
training steps. Each measurement is handed to `emit` as one record (keyword arguments, JSON-ready). Off CUDA the
memory figures are NA, never a number: a CPU run checks the code paths, not the figures.
"""
from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

NA = "n/a on CPU"  # a memory figure off CUDA
# The memory options of sample.py measured: --split-guidance, --offload and both, beside the default.
OPTIONS = {"default": {}, "split-guidance": {"split_guidance": True}, "offload": {"offload": True},
           "offload+split-guidance": {"offload": True, "split_guidance": True}}
Emit = Callable[..., None]  # receives one measurement as keyword arguments


@dataclass(frozen=True)
class Size:
    """What is measured: the video (its model, frames, size and sampling), and the training runs."""

    model: str  # architecture of our pipeline's runs (aa.models.config.ARCHITECTURES)
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


def random_inputs(frames: int, width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
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


def draw_parameter(name: str, shape: torch.Size, g: torch.Generator,
                   device: torch.device | None = None) -> torch.Tensor:
    """One parameter drawn afresh, so that every layer acts (a fresh model's zero output layers would make the
    temporal layers and the Pose Guider do nothing): weights N(0, 1/fan_in), norm scales 1 + N(0, 0.2^2), biases
    N(0, 0.1^2). tools/make_golden_moore.py draws its goldens' weights with it too."""
    r = torch.randn(shape, generator=g, device=device)
    if len(shape) >= 2:
        return r / shape[1:].numel() ** 0.5
    if name.endswith("weight") and "norm" in name:
        return 1 + 0.2 * r
    return 0.1 * r


@torch.no_grad()
def randomize(models, seed: int = 0) -> None:
    """Every parameter drawn afresh on its device (`draw_parameter`, one generator per network), rounded to fp16 so
    the fp16 files hold them exactly."""
    for k, net in enumerate(models.modules().values()):
        g = None
        for name, p in net.named_parameters():
            if g is None:
                g = torch.Generator(p.device).manual_seed(seed + k)
            p.copy_(draw_parameter(name, p.shape, g, p.device).half())


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


def ours_alone(size: Size, dev: Device, emit: Emit) -> None:
    """Our pipeline alone, the release's settings at the comparison's size: a warm-up, then timed runs."""
    from aa.models.config import ARCHITECTURES
    from aa.sampling import pipeline
    models = random_models(ARCHITECTURES[size.model](), dev)
    reference, poses = random_inputs(size.frames, size.width, size.height)
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


def memory_peaks(size: Size, dev: Device, emit: Emit) -> None:
    """Our absolute peak (weights included) per memory option, as `sample.py` runs them."""
    from aa.models.config import ARCHITECTURES
    from aa.sampling import pipeline
    models = random_models(ARCHITECTURES[size.model](), dev)
    reference, poses = random_inputs(size.frames, size.width, size.height)
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


def eager_vs_compiled(size: Size, dev: Device, emit: Emit) -> None:
    """Eager vs the compiled UNet (`sample.py --compile`), our default settings at the comparison's size."""
    import torch._dynamo.utils as dynamo_utils

    from aa.models.config import ARCHITECTURES
    from aa.sampling import pipeline
    from aa.sampling.plan import prepare_unet
    models = random_models(ARCHITECTURES[size.model](), dev)
    reference, poses = random_inputs(size.frames, size.width, size.height)
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


def training_steps(size: Size, dev: Device, emit: Emit) -> None:
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
