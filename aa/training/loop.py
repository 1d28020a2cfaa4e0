"""The training loop: one process per device, data-parallel with torchrun (DDP, or FSDP for small GPUs).

Stage 1 trains the denoising UNet (no temporal layers), the ReferenceNet and the Pose Guider on single frames;
stage 2 adds temporal layers and trains only them on clips (paper 3.3). The VAE and the image encoder stay frozen.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .. import pipeline
from ..data import DataConfig, PoseVideoDataset, read_manifest
from ..models import NAMES, Models
from .checkpoint import latest_checkpoint, load_train_state, save_checkpoint
from .objective import Objective, Trainable, draw_noise, encode
from .sampler import Layout, micro_batch
from .setup import build_models


@dataclass
class TrainConfig:
    """Everything a run needs; `train.py` fills it from the command line (see its --help for each field)."""

    stage: int = 1
    data: str = ""
    out: str = "runs/aa"
    val_data: str | None = None
    model: str = "sd15"
    init: str | None = None
    sd_unet: str | None = None
    vae: str | None = None
    clip: str | None = None
    pose_guider_init: str | None = None
    stage1: str | None = None
    motion: str | None = None
    train_image_encoder: bool = False
    steps: int = 1000
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 1e-5
    warmup: int = 1
    weight_decay: float = 1e-2
    clip_grad: float = 1.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    prediction: str = "v"
    zero_snr: bool = True
    min_snr_gamma: float | None = 5.0
    noise_offset: float = 0.05
    uncond_rate: float = 0.1
    reference: bool = True
    width: int = 512
    height: int = 512
    frames: int = 24
    stride: int = 1
    min_ref_distance: int = 0
    save_every: int = 500
    keep: int = 3
    log_every: int = 10
    val_every: int = 0
    val_steps: int = 20
    seed: int = 0
    workers: int = 2
    fsdp: bool = False
    resume: str | None = None
    device: str | None = None

    @property
    def clip_frames(self) -> int:
        return 1 if self.stage == 1 else self.frames

    def objective(self) -> Objective:
        return Objective(self.prediction, "scaled_linear", self.zero_snr, self.min_snr_gamma, self.noise_offset,
                         self.uncond_rate, reference=self.reference)

    def sampling(self) -> dict:
        """What inference must use with these weights (recorded in every checkpoint's config.json)."""
        return {"prediction": self.prediction, "beta_schedule": "scaled_linear", "zero_snr": self.zero_snr,
                "reference": self.reference, "width": self.width, "height": self.height}


def setup_distributed(device: str | None) -> tuple[int, int, torch.device]:
    """rank, world size and this process's device; starts the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    dev = torch.device(f"cuda:{local}" if cuda else (device or "cpu"))
    if cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return rank, world, dev


def collate(items: list[tuple[int, dict]]) -> tuple[list[int], dict[str, torch.Tensor]]:
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
        return (self.steps - self.start) * self.layout.accumulation

    def __iter__(self):
        for step in range(self.start, self.steps):
            for micro in range(self.layout.accumulation):
                yield [(i, s) for _, i, s in micro_batch(step, micro, self.rank, self.layout, self.n, self.seed)]


def wrap(trainable: Trainable, cfg: TrainConfig, world: int, device: torch.device) -> torch.nn.Module:
    if world == 1:
        return trainable
    if cfg.fsdp:
        from torch.distributed.fsdp import fully_shard

        from ..unet import Level
        for net in (trainable.unet, trainable.reference_net):
            for module in net.modules():
                if isinstance(module, Level):
                    fully_shard(module)
        return fully_shard(trainable)
    return DistributedDataParallel(trainable, device_ids=[device.index] if device.type == "cuda" else None)


def full_state(module: torch.nn.Module, cfg: TrainConfig) -> dict:
    """A module's whole state dict on the CPU (gathered from the shards under FSDP)."""
    if cfg.fsdp and dist.is_initialized():
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return module.state_dict()


def train(cfg: TrainConfig) -> Path:
    """Run training; returns the last checkpoint folder."""
    rank, world, device = setup_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    run = Path(cfg.out)
    models, trainable_names = build_models(cfg)
    models.to(device)
    frozen_names = tuple(n for n in NAMES if n not in trainable_names)
    trainable = Trainable(models, cfg.objective()).to(device)
    for net in (models.unet, models.reference_net):
        net.gradient_checkpointing = cfg.gradient_checkpointing
    params = [p for p in trainable.parameters() if p.requires_grad]

    start = 0
    resume = latest_checkpoint(run) if cfg.resume == "auto" else (Path(cfg.resume) if cfg.resume else None)
    state = None
    if resume is not None:
        from ..weights.native import read_config
        from ..weights.files import read_state_dict
        _, _, files = read_config(resume)
        for name in trainable_names:
            getattr(models, name).load_state_dict(read_state_dict(files[name]))
        state = load_train_state(resume)
        start = int(state["step"])

    model = wrap(trainable, cfg, world, device)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(cfg.warmup, 1)))
    cuda = device.type == "cuda"
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp_dtype == torch.float16)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])

    data_cfg = DataConfig(cfg.width, cfg.height, cfg.clip_frames, cfg.stride, cfg.min_ref_distance,
                          clip_size=models.image_encoder.cfg.image_size)
    dataset = PoseVideoDataset(read_manifest(cfg.data), data_cfg)
    layout = Layout(cfg.batch_size, world, cfg.grad_accum)
    loader = torch.utils.data.DataLoader(
        SeededDataset(dataset), batch_sampler=Batches(start, cfg.steps, rank, layout, len(dataset), cfg.seed),
        num_workers=cfg.workers, collate_fn=collate, persistent_workers=False)

    latent = (models.vae.cfg.latent_channels, cfg.height // models.vae.downscale, cfg.width // models.vae.downscale)
    autocast = torch.autocast("cuda", dtype=amp_dtype) if cuda and amp_dtype else nullcontext()
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        (run / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    log = (run / "log.jsonl").open("a") if rank == 0 else None
    bar = tqdm(total=cfg.steps, initial=start, desc=f"stage {cfg.stage}", disable=rank != 0)
    step, t0, seen, last = start, time.time(), 0, None
    batches = iter(loader)
    while step < cfg.steps:
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(cfg.grad_accum):
            seeds, batch = next(batches)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            noise = draw_noise(seeds, cfg.clip_frames, latent, cfg.objective())
            sync = micro == cfg.grad_accum - 1 or not isinstance(model, DistributedDataParallel)
            with (nullcontext() if sync else model.no_sync()), autocast:
                z0 = encode(models.vae, batch["target"].flatten(0, 1), noise.vae_target)
                ref = encode(models.vae, batch["reference"], noise.vae_reference)
                loss = model(z0, ref, batch["clip"], batch["pose"].flatten(0, 1), noise) / cfg.grad_accum
            scaler.scale(loss).backward()
            total += loss.item()
            seen += len(seeds) * world
        scaler.unscale_(optimizer)
        if cfg.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        step += 1
        if world > 1:
            reduced = torch.tensor([total], device=device)
            dist.all_reduce(reduced)
            total = reduced.item() / world
        if rank == 0:
            rate = seen / max(time.time() - t0, 1e-9)
            bar.set_postfix(loss=f"{total:.4f}", lr=f"{schedule.get_last_lr()[0]:.2e}", samples_s=f"{rate:.2f}")
            bar.update()
            if step % cfg.log_every == 0 or step == cfg.steps:
                log.write(json.dumps({"step": step, "loss": total, "lr": schedule.get_last_lr()[0],
                                      "samples_per_s": rate, "time": time.time()}) + "\n")
                log.flush()
        if step % cfg.save_every == 0 or step == cfg.steps:
            states = {n: full_state(getattr(models, n), cfg) for n in trainable_names}
            if rank == 0:
                train_state = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                               "scaler": scaler.state_dict()}
                last = save_checkpoint(run, step, models, trainable_names, frozen_names, train_state,
                                       cfg.sampling(), cfg.keep, states)
            if world > 1:
                dist.barrier()
        if rank == 0 and cfg.val_every and (step % cfg.val_every == 0 or step == cfg.steps):
            validate(models, cfg, step, run)
    bar.close()
    if log is not None:
        log.close()
    if world > 1:
        dist.barrier()
    return last or latest_checkpoint(run)


@torch.no_grad()
def validate(models: Models, cfg: TrainConfig, step: int, run: Path) -> Path:
    """A validation video with the real pipeline: ground truth | pose | generated, for the first validation clip."""
    from ..video import write_video
    frames = max(cfg.frames if cfg.stage == 2 else 8, 1)
    data = PoseVideoDataset(read_manifest(cfg.val_data or cfg.data),
                            DataConfig(cfg.width, cfg.height, frames, cfg.stride, crop_scale=(1.0, 1.0),
                                       clip_size=models.image_encoder.cfg.image_size))
    sample = data[(0, cfg.seed)]
    to_uint8 = lambda x: ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()  # noqa: E731
    truth, ref = to_uint8(sample["target"]), to_uint8(sample["reference"][None])[0]
    poses = (sample["pose"] * 255).round().byte().permute(0, 2, 3, 1).numpy()
    settings = pipeline.Settings(steps=cfg.val_steps, window=max(frames, 1), prediction=cfg.prediction,
                                 zero_snr=cfg.zero_snr, reference=cfg.reference)
    out = pipeline.animate(models, ref, poses, settings, seed=cfg.seed, progress=False)
    path = run / "val" / f"step_{step:07d}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, (np.concatenate([t, p, o], axis=1) for t, p, o in zip(truth, poses, out)), 8)
    return path

