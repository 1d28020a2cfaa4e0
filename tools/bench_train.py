"""Benchmark training steps with random weights on synthetic in-memory batches (no dataset, no weight files).

    python tools/bench_train.py --device cuda --gradient-checkpointing --mixed-precision bf16   # SD 1.5 size, 512x512
    python tools/bench_train.py --model tiny --width 64 --height 64 --frames 8                 # a CPU-sized run
    python tools/bench_train.py --model sd15 --width 64 --height 64 --stages 1 --steps 3      # SD 1.5 size on CPU

Stage 1 trains the UNet, ReferenceNet and Pose Guider on single frames, stage 2 only the temporal layers on clips of
--frames (paper 3.3), both through the training loop's own step (`aa.training.loop.Trainer`: AdamW, clipping, the
gradient scaler, autocast). Every video is conditional (no unconditional dropout), the worst case. Prints the median
step time and the peak memory: CUDA max_memory_allocated since the stage's models were built (weights, gradients
and optimizer state included), or on the CPU the process's peak resident set size (cumulative over stages: run one
stage per invocation to measure each).

`--profile` splits each step into its phases instead (CPU wall time from module hooks; on CUDA each phase is
synchronised): data (random tensors, or real samples from `--data` decoded, cropped and pose-rendered as training
does), VAE encoding, the image encoder, the ReferenceNet, the Pose Guider, the UNet forward, backward, optimizer:

    python tools/bench_train.py --model demo --width 96 --height 96 --batch-size 8 --stages 1 --threads 1 \\
        --train-image-encoder --data data/synth96p/train.json --profile
"""
from __future__ import annotations

import argparse
import collections
import gc
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as `python tools/bench_train.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aa.models.bundle import Models  # noqa: E402
from aa.models.config import ARCHITECTURES  # noqa: E402
from aa.training.config import STAGES, TrainConfig  # noqa: E402
from aa.training.data import DataConfig, PoseVideoDataset, read_manifests  # noqa: E402
from aa.training.loop import Trainer, collate  # noqa: E402
from aa.training.setup import set_trainable  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(ARCHITECTURES), default="sd15",
                   help="architecture preset: 'sd15' (SD 1.5 UNets + AnimateDiff v2 temporal layers), 'demo' or "
                        "'tiny'")
    p.add_argument("--stages", type=int, nargs="+", choices=STAGES, default=list(STAGES), help="which stages to run")
    p.add_argument("--width", type=int, default=512, help="frame width in pixels (multiple of 8)")
    p.add_argument("--height", type=int, default=512, help="frame height in pixels (multiple of 8)")
    p.add_argument("--frames", type=int, default=24, help="stage 2: frames per clip")
    p.add_argument("--batch-size", type=int, default=1, help="videos per step (stage 1: frames)")
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps per stage (after --warmup)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (allocator and kernel warm-up)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute UNet activations in backward (much less memory)")
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no",
                   help="autocast precision ('fp16' needs CUDA)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--train-image-encoder", action="store_true", help="stage 1: train the image encoder too "
                                                                       "(as the demo does)")
    p.add_argument("--profile", action="store_true", help="print the time of each phase of a step (see above)")
    p.add_argument("--data", nargs="+", help="with --profile: load batches from these manifests (real decoding, "
                                             "cropping and pose rendering) instead of random tensors")
    return p.parse_args(argv)


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f} GiB (CUDA max allocated)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB (process peak RSS)"


def synthetic_batch(cfg: TrainConfig, clip_size: int, step: int) -> tuple[list[int], dict[str, torch.Tensor]]:
    """A micro-batch shaped like `PoseVideoDataset`'s output (random pixels), with per-sample seeds."""
    g = torch.Generator().manual_seed(step)
    b, f, h, w = cfg.batch_size, cfg.clip_frames, cfg.height, cfg.width
    batch = {"target": torch.rand(b, f, 3, h, w, generator=g) * 2 - 1,
             "pose": torch.rand(b, f, 3, h, w, generator=g),
             "reference": torch.rand(b, 3, h, w, generator=g) * 2 - 1,
             "clip": torch.randn(b, 3, clip_size, clip_size, generator=g)}
    return [step * b + i for i in range(b)], batch


def bench_stage(args: argparse.Namespace, stage: int, device: torch.device) -> None:
    cfg = TrainConfig(stage=stage, model=args.model, width=args.width, height=args.height, frames=args.frames,
                      batch_size=args.batch_size, gradient_checkpointing=args.gradient_checkpointing,
                      mixed_precision=args.mixed_precision, uncond_rate=0.0, lr=1e-5,
                      train_image_encoder=args.train_image_encoder)
    cfg.check(device)
    model_cfg = ARCHITECTURES[args.model]()
    if stage == 1:
        model_cfg = replace(model_cfg, unet=replace(model_cfg.unet, motion=None))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    with torch.device(device):  # initialise directly on the device
        models = Models.build(model_cfg)
    set_trainable(models, stage, train_image_encoder=args.train_image_encoder)
    trainer = Trainer(models, cfg, world=1, device=device)
    build_s = time.perf_counter() - t
    if args.profile:
        profile_stage(args, cfg, trainer, model_cfg.clip.image_size, device)
        return
    trained = sum(p.numel() for p in trainer.params)
    times, losses = [], []
    for step in range(args.warmup + args.steps):
        micro = synthetic_batch(cfg, model_cfg.clip.image_size, step)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        loss = trainer.step([micro])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t)
            losses.append(loss)
    median = statistics.median(times)
    frames = cfg.clip_frames * cfg.batch_size
    print(f"stage {stage}: {args.model} {args.width}x{args.height}, {cfg.clip_frames} frame(s) x batch "
          f"{cfg.batch_size}, gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}, "
          f"mixed precision {args.mixed_precision}, {device}")
    print(f"  trainable parameters {trained / 1e6:.1f} M; models built in {build_s:.1f} s; "
          f"mean loss {statistics.mean(losses):.4f}")
    print(f"  step time median {median:.3f} s (min {min(times):.3f}, max {max(times):.3f}, {len(times)} steps); "
          f"{frames / median:.2f} frames/s")
    print(f"  peak memory {peak_memory(device)}")
    del trainer, models
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class PhaseTimer:
    """Wall time per named phase; module forwards are timed by hooks (the outermost timed module owns the time)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.totals, self.active = device, collections.defaultdict(float), []

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] += seconds

    def hook(self, name: str, module: torch.nn.Module) -> None:
        """Time `module`'s forward calls as `name` (nested timed modules count for the outer one only)."""
        def pre(*_: object) -> None:
            self.sync()
            self.active.append((name, time.perf_counter()))

        def post(*_: object) -> None:
            self.sync()
            phase, start = self.active.pop()
            if not self.active:
                self.add(phase, time.perf_counter() - start)
        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)


def profile_stage(args: argparse.Namespace, cfg: TrainConfig, trainer: Trainer, clip_size: int,
                  device: torch.device) -> None:
    """Time each phase of --steps steps after --warmup (one micro-batch each, the loop's own loss), print a table."""
    models, timer = trainer.models, PhaseTimer(device)
    timer.hook("VAE encode", models.vae.encoder)  # encode() calls posterior(), not forward()
    for name in ("image_encoder", "reference_net", "pose_guider", "unet"):
        timer.hook(name, getattr(models, name))
    dataset = None
    if args.data:
        dataset = PoseVideoDataset(read_manifests(args.data), DataConfig(
            cfg.width, cfg.height, cfg.clip_frames, cfg.stride, cfg.min_ref_distance, clip_size=clip_size))
    steps = []
    for step in range(args.warmup + args.steps):
        timer.totals.clear()
        start = time.perf_counter()
        if dataset is None:
            micro = synthetic_batch(cfg, clip_size, step)
        else:
            micro = collate([(step * cfg.batch_size + i, dataset[(step * cfg.batch_size + i) % len(dataset),
                                                                  step * cfg.batch_size + i])
                             for i in range(cfg.batch_size)])
        timer.add("data", time.perf_counter() - start)
        trainer.optimizer.zero_grad(set_to_none=True)
        t = time.perf_counter()
        with trainer.autocast:
            loss = trainer.loss(*micro)
        timer.sync()
        forward = time.perf_counter() - t
        timer.add("loss (rest of forward)", forward - sum(v for k, v in timer.totals.items() if k != "data"))
        t = time.perf_counter()
        trainer.scaler.scale(loss).backward()
        timer.sync()
        timer.add("backward", time.perf_counter() - t)
        t = time.perf_counter()
        trainer.scaler.unscale_(trainer.optimizer)
        torch.nn.utils.clip_grad_norm_(trainer.params, cfg.clip_grad)
        trainer.scaler.step(trainer.optimizer)
        trainer.scaler.update()
        timer.sync()
        timer.add("optimizer", time.perf_counter() - t)
        timer.add("total", time.perf_counter() - start)
        if step >= args.warmup:
            steps.append(dict(timer.totals))
    total = statistics.median(s["total"] for s in steps)
    print(f"stage {cfg.stage} profile: {args.model} {cfg.width}x{cfg.height}, {cfg.clip_frames} frame(s) x batch "
          f"{cfg.batch_size}, data {'from ' + ' '.join(args.data) if args.data else 'random'}, {device}, "
          f"median of {len(steps)} steps")
    for name in ["data", "VAE encode", "image_encoder", "reference_net", "pose_guider", "unet",
                 "loss (rest of forward)", "backward", "optimizer"]:
        t = statistics.median(s.get(name, 0.0) for s in steps)
        print(f"  {name:24s} {t * 1000:8.1f} ms  {100 * t / total:5.1f} %")
    print(f"  {'step':24s} {total * 1000:8.1f} ms")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    for stage in args.stages:
        try:
            bench_stage(args, stage, device)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
