"""The training loop: one process per device, data-parallel with torchrun (DDP, or FSDP for small GPUs).

Stage 1 trains the denoising UNet (no temporal layers), the ReferenceNet and the Pose Guider on single frames;
stage 2 adds temporal layers and trains only them on runs of --frames frames (paper 3.3). The VAE and the image
encoder stay frozen. Every sample's randomness comes from its position in the global sample stream (`sampler.py`),
so a run gives the same result on any number of processes and when resumed.
"""
from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from aa.io.cli import Stopped, StopSignals
from aa.models.bundle import NAMES, Models
from aa.sampling import pipeline
from aa.training.checkpoint import clean_stale, latest_checkpoint, load_train_state, save_checkpoint, step_dir
from aa.training.config import TrainConfig
from aa.training.objective import Trainable, draw_noise, encode
from aa.training.parallel import (
    is_sharded,
    load_optimizer_state,
    network_states,
    optimizer_state,
    setup_distributed,
    wrap,
)
from aa.training.sampler import Layout, micro_batch
from aa.training.setup import build_models, cast_frozen

if TYPE_CHECKING:
    from aa.training.data import PoseVideoDataset

# The data (and through it PyAV) is imported where a run reads videos: the Trainer alone (benchmarks, memory
# measurements) runs without a video library.
ENCODE_CHUNK = 8  # frames per VAE encoder call: its full-resolution activations are ~0.4 GB a frame at 512x512


def param_groups(trainable: nn.Module, params: list[nn.Parameter], cfg: TrainConfig) -> list[dict]:
    """AdamW's parameter groups: `params` at cfg.lr, except those named by a `cfg.fast` prefix (in `trainable`,
    e.g. unet.down_blocks.0.attentions), which get cfg.fast_lr_scale times it."""
    if not cfg.fast:
        return [{"params": params}]
    names = {id(p): name for name, p in trainable.named_parameters()}
    for prefix in cfg.fast:
        if not any(names.get(id(p), "").startswith(prefix) for p in params):
            raise ValueError(f"--fast {prefix}: no trained parameter's name starts with it")
    fast = [p for p in params if names.get(id(p), "").startswith(tuple(cfg.fast))]
    slow = [p for p in params if not names.get(id(p), "").startswith(tuple(cfg.fast))]
    groups = [{"params": slow}, {"params": fast, "lr": cfg.lr * cfg.fast_lr_scale}]
    return [g for g in groups if g["params"]]


class Trainer:
    """The trainable networks wrapped for data parallelism, AdamW with linear warm-up, the gradient scaler, and one
    optimizer step over a few micro-batches (gradient accumulation). `tools/bench_train.py` times this step."""

    def __init__(self, models: Models, cfg: TrainConfig, world: int, device: torch.device) -> None:
        self.models, self.cfg, self.device = models, cfg, device
        self.obj = cfg.objective()
        if cfg.frozen_dtype != "fp32":
            cast_frozen(models, cfg.frozen_torch_dtype())
        self.trainable = Trainable(models, self.obj).to(device)
        for net in (models.unet, models.reference_net):
            net.gradient_checkpointing = cfg.gradient_checkpointing
        amp = cfg.amp_dtype()
        self.model = wrap(self.trainable, cfg.fsdp, world, device, amp)
        self.params = [p for p in self.model.parameters() if p.requires_grad]  # after wrap: FSDP swaps them
        # the fused kernel: on CUDA the default foreach one holds a temporary the size of all trained weights; on the
        # CPU it is 3.5x faster (tools/bench_train.py --profile), not used under FSDP there (DTensor parameters)
        fused = device.type == "cuda" or (device.type == "cpu" and not cfg.fsdp)
        self.optimizer = torch.optim.AdamW(param_groups(self.trainable, self.params, cfg), lr=cfg.lr,
                                           weight_decay=cfg.weight_decay, fused=True if fused else None)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, partial(lr_factor, cfg))
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
        self.autocast = torch.autocast(device.type, dtype=amp) if amp else nullcontext()
        vae = models.vae
        self.latent = (vae.cfg.latent_channels, cfg.height // vae.downscale, cfg.width // vae.downscale)

    def loss(self, seeds: list[int], batch: dict[str, Tensor]) -> Tensor:
        """The mean loss of one micro-batch (from `PoseVideoDataset`), its noise drawn from the samples' seeds."""
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        noise = draw_noise(seeds, self.cfg.clip_frames, self.latent, self.obj)
        chunks = zip(batch["target"].flatten(0, 1).split(ENCODE_CHUNK), noise.vae_target.split(ENCODE_CHUNK))
        z0 = torch.cat([encode(self.models.vae, x, eps) for x, eps in chunks])  # (b f) c h w
        ref = encode(self.models.vae, batch["reference"], noise.vae_reference)  # b c h w
        return self.model(z0, ref, batch["clip"], batch["pose"].flatten(0, 1), noise)

    def step(self, micro_batches: Iterable[tuple[list[int], dict[str, Tensor]]]) -> float:
        """One optimizer step; returns this process's mean loss over the `cfg.grad_accum` micro-batches."""
        self.optimizer.zero_grad(set_to_none=True)
        total, n = torch.zeros((), dtype=torch.float64, device=self.device), self.cfg.grad_accum
        for k, (seeds, batch) in zip(range(n), micro_batches):
            # DDP: average gradients across processes only after the last micro-batch
            sync = k == n - 1 or not hasattr(self.model, "no_sync")
            with nullcontext() if sync else self.model.no_sync():
                with self.autocast:
                    loss = self.loss(seeds, batch) / n
                self.scaler.scale(loss).backward()
            total += loss.detach()  # summed in fp64 like Python floats; read once per step (one host sync)
        self.scaler.unscale_(self.optimizer)
        if self.cfg.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        return total.item()

    def state(self) -> dict:
        """Optimizer, schedule and scaler state (gathered whole under FSDP: call on every rank)."""
        return {"optimizer": optimizer_state(self.model, self.trainable, self.optimizer),
                "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state(self, state: dict) -> None:
        """Restore what `state` returned (after the trainable weights are loaded); ValueError if the checkpoint's
        optimizer grouped the parameters otherwise (another --fast)."""
        saved = [len(g["params"]) for g in state["optimizer"].get("param_groups", [])]
        now = [len(g["params"]) for g in self.optimizer.param_groups]
        if saved != now:
            raise ValueError(f"the checkpoint's optimizer had parameter groups of {saved} parameters (slow, fast), "
                             f"this run's has {now}: resume with the checkpoint's --fast (its run folder's "
                             f"train_config.json has it), or start a new run from its weights")
        load_optimizer_state(self.model, self.trainable, self.optimizer, state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])


def collate(items: list[tuple[int, dict]]) -> tuple[list[int], dict[str, Tensor]]:
    """(seed, sample) pairs -> the seeds and the samples stacked along a new batch axis."""
    seeds = [seed for seed, _ in items]
    return seeds, {k: torch.stack([x[k] for _, x in items]) for k in items[0][1]}


class SeededDataset(torch.utils.data.Dataset):
    """Wraps a dataset indexed by (index, seed) so the sample's seed travels with it to the loss's noise."""

    def __init__(self, dataset: PoseVideoDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, dict]:
        return key[1], self.dataset[key]


class Batches(torch.utils.data.Sampler):
    """This process's micro-batches from `start` to `steps`, as lists of (dataset index, sample seed)."""

    def __init__(self, start: int, steps: int, rank: int, layout: Layout, num_items: int, seed: int) -> None:
        self.start, self.steps, self.rank, self.layout, self.n, self.seed = start, steps, rank, layout, num_items, seed

    def __len__(self) -> int:
        return max(self.steps - self.start, 0) * self.layout.accumulation

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.steps):
            for micro in range(self.layout.accumulation):
                yield [(i, s) for _, i, s in micro_batch(step, micro, self.rank, self.layout, self.n, self.seed)]


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """The learning-rate multiplier at a step: linear warm-up over `warmup` steps, constant, then a linear decay to
    zero over the last `decay` steps (a cheap stand-in for weight averaging: small models sample much cleaner)."""
    up = min(1.0, (step + 1) / max(cfg.warmup, 1))
    return up * min(1.0, (cfg.steps - step) / cfg.decay) if cfg.decay else up


def resume_from(cfg: TrainConfig, run: Path) -> Path | None:
    """The checkpoint to resume: --resume DIR, 'auto' (the newest in the run folder, if any), or None."""
    if cfg.resume == "auto":
        return latest_checkpoint(run)
    return Path(cfg.resume) if cfg.resume else None


def stop_requested(stop: StopSignals | None, world: int, device: torch.device) -> int:
    """The stop signal's number if any process got one (all processes agree), else 0."""
    if stop is None:  # the same in every process
        return 0
    signum = stop.signum
    if world > 1:
        flag = torch.tensor([signum], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        signum = int(flag.item())
    return signum


def train(cfg: TrainConfig, stop: StopSignals | None = None) -> Path:
    """Run training; returns the last checkpoint folder. When `stop` reports a signal, a checkpoint of the current
    step is saved and `Stopped` raised."""
    from aa.training.data import DataConfig, PoseVideoDataset, read_manifests
    rank, world, device = setup_distributed(cfg.device)
    cfg.check(device)
    torch.manual_seed(cfg.seed)  # the same random init in every process
    run = Path(cfg.out)
    if rank == 0:
        clean_stale(run)  # temp folders of killed runs
    models, trainable_names = build_models(cfg)
    if cfg.width % models.size_multiple or cfg.height % models.size_multiple:
        raise ValueError(f"--width and --height must be multiples of {models.size_multiple} for this model, got "
                         f"{cfg.width}x{cfg.height}")
    models.to(device)
    frozen_names = tuple(n for n in NAMES if n not in trainable_names)

    start, state = 0, None
    resume = resume_from(cfg, run)
    if resume is not None:  # weights before wrapping (FSDP shards what is there), optimizer state after
        from aa.weights.files import read_state_dict
        from aa.weights.native import read_config
        _, _, files = read_config(resume)
        for name in trainable_names:
            getattr(models, name).load_state_dict(read_state_dict(files[name]))
        state = load_train_state(resume)
        start = int(state["step"])
    trainer = Trainer(models, cfg, world, device)
    if state is not None:
        trainer.load_state(state)

    data_cfg = DataConfig(cfg.width, cfg.height, cfg.clip_frames, cfg.stride, cfg.min_ref_distance,
                          clip_size=models.image_encoder.cfg.image_size, colour_augment=cfg.colour_augment)
    dataset = PoseVideoDataset(read_manifests(cfg.data), data_cfg)
    layout = Layout(cfg.batch_size, world, cfg.grad_accum)
    loader = torch.utils.data.DataLoader(
        SeededDataset(dataset), batch_sampler=Batches(start, cfg.steps, rank, layout, len(dataset), cfg.seed),
        num_workers=cfg.workers, collate_fn=collate, pin_memory=device.type == "cuda")

    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        (run / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    log_file = (run / "log.jsonl").open("a") if rank == 0 else None
    bar = tqdm(total=cfg.steps, initial=start, desc=f"stage {cfg.stage}", disable=rank != 0)
    step, t0, last = start, time.time(), None
    batches = iter(loader)
    while step < cfg.steps:
        loss = trainer.step(batches)
        step += 1
        if world > 1:
            reduced = torch.tensor([loss], device=device)
            dist.all_reduce(reduced)
            loss = reduced.item() / world
        if rank == 0:
            lr = trainer.schedule.get_last_lr()[0]
            rate = (step - start) * layout.global_batch / max(time.time() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", samples_s=f"{rate:.2f}")
            bar.update()
            if step % cfg.log_every == 0 or step == cfg.steps:
                log_file.write(json.dumps({"step": step, "loss": loss, "lr": lr, "samples_per_s": rate,
                                           "time": time.time()}) + "\n")
                log_file.flush()
        stopping = stop_requested(stop, world, device)
        if step % cfg.save_every == 0 or step == cfg.steps or stopping:
            states = network_states(trainer.model, models, NAMES)  # a collective under FSDP
            train_state = trainer.state()
            if rank == 0:
                last = save_checkpoint(run, step, models, trainable_names, frozen_names, train_state,
                                       cfg.sampling(), cfg.keep, states)
            if world > 1:
                dist.barrier()
        if stopping:
            bar.close()
            raise Stopped(stopping, f"stopped by {signal.Signals(stopping).name} at step {step}; saved "
                                    f"{step_dir(run, step)}; continue with --resume auto")
        if cfg.val_every and (step % cfg.val_every == 0 or step == cfg.steps):
            if is_sharded(trainer.model):  # every rank runs the sharded networks; rank 0 writes the video
                trainer.model.unshard()
                validate(models, cfg, step, run, write=rank == 0)
                trainer.model.reshard()
            elif rank == 0:
                validate(models, cfg, step, run)
    bar.close()
    if log_file is not None:
        log_file.close()
    if world > 1:
        dist.barrier()
    return last or latest_checkpoint(run)


@torch.no_grad()
def validate(models: Models, cfg: TrainConfig, step: int, run: Path, write: bool = True) -> Path | None:
    """A validation video with the real pipeline, ground truth | pose | generated, for the first frames of the first
    validation video (stage 1: up to 8, stage 2: --frames); written to run/val/step_N.mp4."""
    from aa.io.video import VideoError, video_info, write_video
    from aa.training.data import DataConfig, PoseVideoDataset, read_manifests
    entries = read_manifests(cfg.val_data or cfg.data)
    frames = cfg.frames
    if cfg.stage == 1:  # the first video's length, up to 8 (the stage-1 UNet has no temporal layers)
        try:
            frames = min(8, video_info(entries[0].video).frames)
        except VideoError:
            frames = 8
    data = PoseVideoDataset(entries, DataConfig(cfg.width, cfg.height, frames, cfg.stride, crop_scale=(1.0, 1.0),
                                                clip_size=models.image_encoder.cfg.image_size))
    sample = data[(0, cfg.seed)]
    to_uint8 = lambda x: ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()  # noqa: E731
    truth, ref = to_uint8(sample["target"]), to_uint8(sample["reference"][None])[0]
    poses = (sample["pose"] * 255).round().byte().permute(0, 2, 3, 1).numpy()
    settings = pipeline.Settings(steps=cfg.val_steps, window=frames, overlap=0, prediction=cfg.prediction,
                                 zero_snr=cfg.zero_snr, reference=cfg.reference)
    out = pipeline.animate(models, ref, poses, settings, seed=cfg.seed, progress=False)
    if not write:
        return None
    path = run / "val" / f"step_{step:07d}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, (np.concatenate([t, p, o], axis=1) for t, p, o in zip(truth, poses, out)), 8)
    return path
