"""Data parallelism under torchrun: DDP (a full copy of the networks per process) or FSDP2 (parameters, gradients and
optimizer state sharded across processes), and the full states a checkpoint stores in either case.

Both average the per-process mean losses' gradients; with equal per-process batches that is the global batch's mean,
so N processes with batch b train like one process with batch N x b (tests/test_training.py checks it on gloo).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.nn.parallel import DistributedDataParallel

from aa.models.attention import Transformer2D
from aa.models.bundle import Models
from aa.models.resnet import ResnetBlock2D
from aa.models.temporal import MotionModule
from aa.training.objective import Trainable

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)  # whole tensors, gathered to the CPU


def setup_distributed(device: str | None) -> tuple[int, int, torch.device]:
    """rank, world size and this process's device; starts the process group under torchrun (nccl, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    dev = torch.device(f"cuda:{local}" if cuda else (device or "cpu"))
    if cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return rank, world, dev


def wrap(trainable: Trainable, fsdp: bool, world: int, device: torch.device,
         amp: torch.dtype | None = None) -> nn.Module:
    """The module the training step calls: `trainable` itself in one process, else DDP- or FSDP-wrapped.

    DDP's gradients are views into its all-reduce buckets (no second copy of them); FSDP under mixed precision
    gathers the weights in `amp` and reduces the gradients in fp32."""
    if world == 1:
        return trainable
    if fsdp:
        return shard(trainable, amp)
    return DistributedDataParallel(trainable, device_ids=[device.index] if device.type == "cuda" else None,
                                   gradient_as_bucket_view=True)


def shard(trainable: Trainable, amp: torch.dtype | None = None) -> nn.Module:
    """FSDP2: every ResNet, spatial transformer and temporal layer of both UNets is one unit (gathered just for its
    own forward and backward); the small rest (conv_in/out, time embedding, resamplers, Pose Guider, image encoder)
    forms the root unit.

    Two calls reach into a unit from outside its `forward`: `UNet.reference_kv` uses each block's `attn1.to_k` and
    `to_v` (so these Linear layers are units of their own), and the ReferenceNet's last block runs only
    `Transformer2D.reference_features` (registered as a forward method)."""
    from functools import partial

    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    shard_unit = partial(fully_shard, mp_policy=MixedPrecisionPolicy(param_dtype=amp, reduce_dtype=torch.float32)
                         if amp is not None else MixedPrecisionPolicy())
    for transformer in trainable.unet.transformers():  # the innermost units first
        attn1 = transformer.transformer_blocks[0].attn1
        shard_unit(attn1.to_k)
        shard_unit(attn1.to_v)
    for net in (trainable.unet, trainable.reference_net):
        for module in list(net.modules()):
            if isinstance(module, (ResnetBlock2D, Transformer2D, MotionModule)):
                shard_unit(module)
                if isinstance(module, Transformer2D):
                    register_fsdp_forward_method(module, "reference_features")
    return shard_unit(trainable)


def is_sharded(model: nn.Module) -> bool:
    """True for a module wrapped by FSDP2's fully_shard."""
    from torch.distributed.fsdp import FSDPModule
    return isinstance(model, FSDPModule)


def network_states(model: nn.Module, models: Models, names: tuple[str, ...]) -> dict[str, dict]:
    """The whole state dict of each network in `names` (gathered from the shards under FSDP, where it is a
    collective: call on every rank)."""
    states = {name: getattr(models, name).state_dict() for name in names}
    if is_sharded(model):
        full = get_model_state_dict(model, options=FULL)  # Trainable's networks: unet.*, reference_net.*, ...
        for name in names:
            sharded = {k[len(name) + 1:]: v for k, v in full.items() if k.startswith(name + ".")}
            states[name] = sharded or states[name]  # the VAE is not in Trainable: never sharded
    return states


def optimizer_state(model: nn.Module, trainable: Trainable, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state keyed by parameter name, whole tensors on the CPU, the same layout for one process, DDP
    and FSDP (so a run can resume on another number of processes). Call on every rank."""
    return get_optimizer_state_dict(model if is_sharded(model) else trainable, optimizer, options=FULL)


def load_optimizer_state(model: nn.Module, trainable: Trainable, optimizer: torch.optim.Optimizer,
                         state: dict) -> None:
    """Inverse of `optimizer_state` (each rank keeps its own shard under FSDP)."""
    if any(isinstance(p, int) for group in state.get("param_groups", []) for p in group["params"]):
        raise ValueError("this checkpoint's optimizer state is keyed by position (written by an older train.py) and "
                         "can't resume: start a new run from its weights (stage 1: --init CHECKPOINT, stage 2: "
                         "--stage1 CHECKPOINT)")
    sharded = is_sharded(model)
    set_optimizer_state_dict(model if sharded else trainable, optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=sharded))
