"""Memory estimates (aa/eval/memory.py, tools/estimate_train_memory.py): the tracker's bookkeeping, the meta device made
to allocate like a real one, and a whole training step estimated on meta against the CPU allocator's real peak."""
from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from aa.eval.memory import Emulate, MemoryTracker, nbytes
from aa.eval.train_memory import batch, build, measure
from aa.training.config import TrainConfig
from aa.training.loop import Trainer


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def allocator_peak(fn) -> int:
    """The CPU allocator's peak of bytes allocated while `fn` runs, from torch.profiler's memory events.

    This is the independent measurement: with profile_memory=True every allocation and free of the CPU allocator is
    recorded with the allocator's running total of bytes allocated since profiling began (c10's profiled memory
    reporter), including memory that is not a tensor storage visible to Python (kernel workspaces). The other
    candidates don't work in torch 2.13 on CPU: torch.cuda's counters need CUDA, tracemalloc doesn't see torch's
    allocations, and the process RSS moves with the C allocator's arenas and page reuse, not with tensors."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    peak, stack = 0, list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == torch._C._profiler._EventType.Allocation:
            peak = max(peak, node.extra_fields.total_allocated)
    return peak


def test_tracker_counts_each_storage_once_until_it_is_freed():
    """A view adds nothing, a freed tensor leaves the live bytes, the peak and its split by category stay."""
    with MemoryTracker() as mem:
        a = torch.empty(1000, device="meta")  # 4000 bytes
        view = a[:10]
        with mem.category("optimizer"):
            b = torch.empty(250, device="meta")  # 1000 bytes
        assert mem.total == 5000
        del a, view
        assert mem.total == 1000 and mem.live["activations"] == 0
        c = torch.zeros(100, dtype=torch.float16, device="meta")  # 200 bytes: below the peak
    assert mem.peak == 5000 and mem.peak_by_category == {"activations": 4000, "optimizer": 1000}
    assert b.device.type == c.device.type == "meta"


def test_tracked_tensors_and_gradients_change_category():
    """Existing tensors are counted by walking them; a parameter's gradient moves to 'gradients' when accumulated."""
    lin = torch.nn.Linear(100, 100, device="meta")
    with MemoryTracker() as mem:
        mem.track(lin.parameters(), "weights")
        mem.track_gradients(lin.parameters())
        lin(torch.empty(8, 100, device="meta")).sum().backward()
    assert mem.live["weights"] == mem.live["gradients"] == nbytes(lin.parameters()) == 4 * (100 * 100 + 100)


def test_meta_attention_allocates_like_the_fused_kernel():
    """On meta, F.scaled_dot_product_attention falls back to the math path and stores the (n, n) scores; emulated,
    it allocates what the CPU's fused kernel allocates (output and log-sum-exp), measured on real CPU tensors."""
    def peak(device: str, emulate: bool) -> int:
        q = torch.zeros(1, 2, 512, 16, device=device, requires_grad=True)
        with MemoryTracker() as mem, Emulate("cpu") if emulate else nullcontext():
            F.scaled_dot_product_attention(q, q, q).sum().backward()
        return mem.peak

    assert peak("meta", True) == peak("cpu", False)
    assert peak("meta", False) > 2 * 512 * 512 * 4  # the math path's scores


def test_emulated_autocast_casts_like_cuda_autocast():
    """Under Emulate.autocast(bf16) a Linear computes in bf16 from one cached bf16 copy of its trained weight, and a
    LayerNorm returns fp32, as CUDA autocast does (meta tensors ignore torch.autocast)."""
    lin = torch.nn.Linear(64, 64, device="meta")
    norm = torch.nn.LayerNorm(64, device="meta")
    emu = Emulate("cuda")
    with emu, emu.autocast(torch.bfloat16):
        x = torch.empty(4, 64, device="meta")
        y, z = lin(x), lin(x)
        assert y.dtype == z.dtype == torch.bfloat16 and norm(y).dtype == torch.float32
        assert len(emu._cache) == 2  # weight and bias, cast once
    assert not emu._cache


@pytest.mark.parametrize("stage, size, changes", [(2, 64, {"frames": 8}), (1, 32, {"gradient_checkpointing": True})])
def test_estimate_on_meta_matches_the_real_cpu_peak(stage, size, changes):
    """The estimator's peak for a small configuration (tiny model) on the meta device is within 10% of the CPU
    allocator's peak for the same two training steps run for real (in fact within 0.1%: only kernel workspaces are
    unseen). Stage 2 without checkpointing (64x64, 8 frames) is mostly activations; stage 1 with checkpointing
    (32x32) exercises the recomputation and is mostly weights, gradients and AdamW states."""
    cfg = TrainConfig(stage=stage, model="tiny", width=size, height=size, **changes)
    estimate, _ = measure(cfg, device="meta", emulate="cpu", optimizer="single")
    real = allocator_peak(lambda: measure(cfg, device="cpu", emulate="cpu", optimizer="single"))
    assert abs(estimate.peak - real) <= 0.1 * real, (estimate.peak, real)
    assert estimate.peak_by_category["activations"] > 0


def test_frozen_weights_in_bf16_train_under_autocast():
    """--frozen-dtype bf16: the frozen weights are stored in bf16 (half their bytes), the trained temporal layers stay
    fp32 and train, under bf16 autocast on the CPU; the setting is refused without mixed precision."""
    cfg = TrainConfig(stage=2, model="tiny", width=32, height=32, frames=4, mixed_precision="bf16",
                      frozen_dtype="bf16", uncond_rate=0.0)
    models = build(cfg, "cpu")
    frozen = [p for m in models.modules().values() for p in m.parameters() if not p.requires_grad]
    before = nbytes(frozen)
    trainer = Trainer(models, cfg, 1, torch.device("cpu"))
    assert nbytes(frozen) * 2 == before and all(p.dtype == torch.bfloat16 for p in frozen)
    motion = [p.detach().clone() for p in trainer.params]
    loss = trainer.step(iter([batch(cfg, models, "cpu", 0)]))
    assert loss == loss and all(p.dtype == torch.float32 for p in trainer.params)
    assert any(not torch.equal(a, b) for a, b in zip(motion, trainer.params))
    with pytest.raises(ValueError, match="frozen-dtype"):
        TrainConfig(frozen_dtype="bf16").check(torch.device("cpu"))


def test_device_filter_counts_only_that_device():
    """`MemoryTracker(device="meta")` counts tensors on meta (the stand-in for the GPU) and ignores host tensors."""
    with MemoryTracker(device="meta") as mem:
        on_meta = torch.empty(1000, device="meta")  # 4000 bytes
        on_host = torch.empty(500)  # 2000 bytes, not device memory
        assert mem.total == on_meta.nbytes
    assert mem.peak == 4000 and on_host.nbytes == 2000
