"""Training memory at full size without the hardware (tools/estimate_train_memory.py is its command line): a
stage's networks built on the `meta` device, real training steps of `aa.training.loop.Trainer` run on meta tensors,
and the peak of live tensor bytes by category (aa/eval/memory.py). Emulated: CUDA's fused attention and autocast's
casts; DDP's gradient buckets added from the gradient bytes; not counted: CUDA context, workspaces, the allocator's
rounding and fragmentation."""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import Iterator

import torch

import aa.models.unet
from aa.eval.memory import Emulate, MemoryTracker, gb, nbytes
from aa.models.bundle import Models
from aa.models.config import ARCHITECTURES
from aa.training.config import TrainConfig
from aa.training.loop import Trainer
from aa.training.setup import set_trainable

CATEGORIES = ("weights", "gradients", "optimizer", "data", "activations")


def build(cfg: TrainConfig, device: str | torch.device = "meta") -> Models:
    """The networks of a stage with random weights (stage 1: no temporal layers), requires_grad set as training."""
    model_cfg = ARCHITECTURES[cfg.model]()
    if cfg.stage == 1:
        model_cfg = replace(model_cfg, unet=replace(model_cfg.unet, motion=None))
    with torch.device(device):
        models = Models.build(model_cfg)
    set_trainable(models, cfg.stage, cfg.reference, cfg.train_image_encoder)
    return models


def batch(cfg: TrainConfig, models: Models, device: str | torch.device, step: int) -> tuple[list[int], dict]:
    """A micro-batch shaped like `PoseVideoDataset`'s, with its seeds, on `device` (random values: only shapes
    matter here)."""
    b, f, h, w, s = cfg.batch_size, cfg.clip_frames, cfg.height, cfg.width, models.image_encoder.cfg.image_size
    g = torch.Generator().manual_seed(step)
    images = {"target": torch.rand(b, f, 3, h, w, generator=g) * 2 - 1,
              "pose": torch.rand(b, f, 3, h, w, generator=g),
              "reference": torch.rand(b, 3, h, w, generator=g) * 2 - 1,
              "clip": torch.randn(b, 3, s, s, generator=g)}
    return list(range(step * b, (step + 1) * b)), {name: x.to(device) for name, x in images.items()}


@contextmanager
def checkpoint_autocast(emulate: Emulate) -> Iterator[None]:
    """Gradient checkpointing recomputes in backward, where the emulation is off (a function mode is off inside its
    own handler, here of `backward`), under the forward's autocast state (torch.utils.checkpoint restores it for
    torch.autocast, not for the emulated one): wrap the UNet's checkpoint calls to restore both."""
    original = aa.models.unet.checkpoint

    def wrapped(fn, *args, **kwargs):
        dtype = emulate.dtype

        def run(*a):
            with emulate if torch._C._len_torch_function_stack() == 0 else nullcontext(), emulate.autocast(dtype):
                return fn(*a)
        return original(run, *args, **kwargs)

    aa.models.unet.checkpoint = wrapped
    try:
        yield
    finally:
        aa.models.unet.checkpoint = original


def measure(cfg: TrainConfig, device: str = "meta", emulate: str = "cuda", optimizer: str = "foreach",
            frozen_dtype: str = "fp32", steps: int = 2) -> tuple[MemoryTracker, int]:
    """Peak live tensor bytes of `steps` training steps (the second has the optimizer states: the peak) by category.

    device 'meta' estimates; 'cpu' runs the same steps for real (the test compares the two). optimizer: 'foreach'
    (CUDA's default AdamW: one temporary the size of all trained weights), 'fused' (no temporaries; run as the
    per-tensor AdamW, whose temporaries are one tensor at a time), 'single' (the per-tensor AdamW). Returns the
    tracker and the bytes of the trained parameters (DDP's gradient buckets hold as many)."""
    cfg = replace(cfg, uncond_rate=0.0)  # every video conditional: the ReferenceNet runs for all, the worst case
    amp = cfg.amp_dtype()
    models = build(cfg, device)
    emu = Emulate(emulate)
    dev = torch.device(device)
    with MemoryTracker() as mem, emu:
        nets = models.modules().values()
        mem.track([t for net in nets for t in (*net.parameters(), *net.buffers())], "weights")
        with mem.category("weights"):  # frozen weights cast to --frozen-dtype, the loss's schedule buffer
            trainer = Trainer(models, replace(cfg, mixed_precision="no", frozen_dtype=frozen_dtype), 1, dev)
        trainer.optimizer = torch.optim.AdamW(trainer.params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                              foreach=optimizer == "foreach")
        trainer.schedule = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda step: 1.0)
        trainer.optimizer.register_step_pre_hook(lambda *_: setattr(mem, "current", "optimizer"))
        trainer.optimizer.register_step_post_hook(lambda *_: setattr(mem, "current", "activations"))
        mem.track_gradients(trainer.params)
        if amp is not None and dev.type == "meta":
            trainer.autocast = emu.autocast(amp)
        elif amp is not None:
            trainer.autocast = torch.autocast(dev.type, dtype=amp)
        with checkpoint_autocast(emu):
            for k in range(steps):  # one batch on the device at a time, as in training
                with mem.category("data"):
                    micro = batch(cfg, models, dev, k)
                trainer.step(iter([micro]))
                del micro
    return mem, nbytes(trainer.params)


def report(cfg: TrainConfig, optimizer: str, frozen_dtype: str, ddp: str) -> dict[str, float]:
    """GiB by category at the peak, DDP's buckets added ('no': one process; 'buckets': DDP as it was, a second
    copy of the gradients; 'view': gradient_as_bucket_view, the gradients live in the buckets all the time)."""
    mem, trained = measure(cfg, optimizer=optimizer, frozen_dtype=frozen_dtype)
    out = {k: gb(mem.peak_by_category.get(k, 0)) for k in CATEGORIES}
    if ddp == "buckets":
        out["ddp buckets"] = gb(trained)
    elif ddp == "view":  # the gradients' bytes are there at the peak whether backward has reached them or not
        out["ddp buckets"] = gb(trained - mem.peak_by_category.get("gradients", 0))
    out["total"] = sum(out.values())
    return out
