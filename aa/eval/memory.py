"""Live tensor memory and its peak, by category, measured by watching every op: works on the `meta` device, so the
memory of a full-size model can be estimated on a machine without the memory (or the GPU) to run it.

    from aa.eval.memory import MemoryTracker, gb

    with torch.device("meta"):
        model = build()                       # parameters on meta: no memory is used
    with MemoryTracker() as mem:
        mem.track(model.parameters(), "weights")      # tensors that existed before: counted by walking them
        with mem.category("inputs"):
            x = torch.randn(1, 4, 64, 64, device="meta")
        model(x).mean().backward()            # everything new is "activations" (the default category)
    print(gb(mem.peak), {k: gb(v) for k, v in mem.peak_by_category.items()})

On meta, wrap the run in `Emulate("cuda")` (or "cpu") so that attention allocates what the device's fused kernel
allocates, not the meta fallback's (n, m) score matrix; `emulate.autocast(torch.bfloat16)` stands in for
torch.autocast, which meta tensors ignore: `with MemoryTracker() as mem, Emulate("cuda") as emu, emu.autocast(dtype):`.

A storage is counted once (views share it), from the op that creates it until Python drops its last reference
(a weakref finalizer on the storage). `item()` on a meta tensor returns 1 inside the tracker, so code that reads a
scalar (an optimizer's step count) runs on meta too. Not seen: memory an op allocates and frees inside its own kernel
(workspaces, e.g. cuDNN's), the CUDA caching allocator's rounding (to 512 bytes) and fragmentation, and the CUDA
context itself (~0.3-0.5 GB): add these to the peak when sizing a GPU.
"""
from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

GB = 1024 ** 3


def gb(nbytes: int) -> float:
    """Bytes to GiB (what `nvidia-smi` and torch.cuda call GB)."""
    return nbytes / GB


class MemoryTracker(TorchDispatchMode):
    """A dispatch mode that keeps the live bytes of every tensor storage by category, and the peak of their sum."""

    def __init__(self, default: str = "activations", device: str | None = None) -> None:
        super().__init__()
        self.default = default
        self.device = device  # count only tensors on this device type (e.g. "meta", standing in for the GPU)
        self.live: dict[str, int] = defaultdict(int)  # category -> live bytes
        self.peak = 0
        self.peak_by_category: dict[str, int] = {}
        self.current = default  # the category of tensors created now
        self._storages: dict[int, tuple[str, int]] = {}  # id(storage) -> (category, bytes)
        self._hooks: list = []

    @property
    def total(self) -> int:
        """The live bytes now, all categories."""
        return sum(self.live.values())

    @contextmanager
    def category(self, name: str) -> Iterator[None]:
        """Count the tensors created inside the block as `name` (e.g. 'optimizer' around `optimizer.step()`)."""
        previous, self.current = self.current, name
        try:
            yield
        finally:
            self.current = previous

    def track(self, tensors: Iterable[Tensor | None], category: str) -> None:
        """Count existing tensors (parameters, gradients, optimizer states) as `category`; re-tags tracked ones."""
        for t in tensors:
            if isinstance(t, Tensor):
                self._add(t, category, retag=True)

    def track_gradients(self, params: Iterable[Tensor], category: str = "gradients") -> None:
        """Re-tag each parameter's .grad as `category` as soon as backward accumulates it (until `__exit__`)."""
        for p in params:
            if p.requires_grad:
                self._hooks.append(p.register_post_accumulate_grad_hook(
                    lambda q: self._add(q.grad, category, retag=True)))

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default and args[0].device.type == "meta":
            return True if args[0].dtype == torch.bool else 1  # a placeholder scalar: meta tensors hold no values
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                self._add(t, self.current, retag=False)
        return out

    def _add(self, t: Tensor, category: str, retag: bool) -> None:
        """Count t's storage if new (or grown: resize_), or move it to `category` when retag is set."""
        if t.is_sparse or t.layout != torch.strided or (self.device is not None and t.device.type != self.device):
            return
        storage = t.untyped_storage()
        key, nbytes = id(storage), storage.nbytes()
        old = self._storages.get(key)
        if old is not None and not retag and old[1] == nbytes:
            return
        if old is None:
            weakref.finalize(storage, self._free, key)
        else:
            self.live[old[0]] -= old[1]
            category = category if retag else old[0]
        self._storages[key] = (category, nbytes)
        self.live[category] += nbytes
        total = self.total
        if total > self.peak:
            self.peak, self.peak_by_category = total, {k: v for k, v in self.live.items() if v}

    def _free(self, key: int) -> None:
        """A storage was garbage-collected: its bytes are no longer live."""
        category, nbytes = self._storages.pop(key, (None, 0))
        if category is not None:
            self.live[category] -= nbytes


# CUDA autocast's op lists (torch.amp docs), the ops our networks call: these run in the low precision ...
LOW = {F.linear, F.conv1d, F.conv2d, F.conv_transpose2d, torch.matmul, Tensor.matmul, Tensor.__matmul__, torch.bmm,
       torch.baddbmm, torch.addmm, torch.einsum, F.scaled_dot_product_attention}
# ... and these in fp32 (their outputs are fp32 whatever their inputs)
FP32 = {F.group_norm, F.layer_norm, F.softmax, torch.softmax, Tensor.softmax, F.log_softmax, F.mse_loss, torch.exp,
        torch.pow, Tensor.pow, torch.sum, Tensor.sum, torch.cumsum, torch.rsqrt, torch.norm, F.normalize}


class Emulate(TorchFunctionMode):
    """Make meta tensors allocate like a real device: SDPA takes the fused kernel that `device` would pick instead of
    the meta device's math fallback (which stores the attention matrix), and `autocast(dtype)` casts as CUDA's
    autocast does (meta tensors ignore torch.autocast), caching the casts of parameters that train."""

    def __init__(self, device: str = "cuda") -> None:
        super().__init__()
        assert device in ("cuda", "cpu"), f"emulate 'cuda' or 'cpu', got {device!r}"
        self.device, self.dtype = device, None
        self._cache: dict[int, Tensor] = {}

    def autocast(self, dtype: torch.dtype | None) -> "_Autocast":
        """A reusable context like torch.autocast(device, dtype) for meta tensors (dtype None: no autocast)."""
        return _Autocast(self, dtype)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.dtype is not None and (func in LOW or func in FP32):
            dtype = self.dtype if func in LOW else torch.float32
            args, kwargs = [self._cast(a, dtype) for a in args], {k: self._cast(v, dtype) for k, v in kwargs.items()}
        if func is F.scaled_dot_product_attention and args[0].device.type == "meta":
            return self._attention(*args, **kwargs)
        return func(*args, **kwargs)

    def _cast(self, x: object, dtype: torch.dtype) -> object:
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dtype == dtype:
            return x
        if x.is_leaf and x.requires_grad:  # autocast caches the casts of trained weights for the whole region
            if id(x) not in self._cache:
                self._cache[id(x)] = x.to(dtype)
            return self._cache[id(x)]
        return x.to(dtype)

    def _attention(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                   is_causal: bool = False, scale: float | None = None, **_) -> Tensor:
        """The fused kernel's allocations: the output and a per-row log-sum-exp, no (n, m) matrix."""
        if self.device == "cpu":
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q, k, v, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]
        return torch.ops.aten._scaled_dot_product_efficient_attention(
            q, k, v, attn_mask, q.requires_grad or k.requires_grad or v.requires_grad, dropout_p, is_causal,
            scale=scale)[0]


class _Autocast:
    """The region of `Emulate.autocast`; leaving the outermost region drops the cached casts, as autocast does."""

    def __init__(self, emulate: Emulate, dtype: torch.dtype | None) -> None:
        self.emulate, self.dtype, self.previous = emulate, dtype, None

    def __enter__(self) -> None:
        self.previous, self.emulate.dtype = self.emulate.dtype, self.dtype

    def __exit__(self, *exc) -> None:
        self.emulate.dtype = self.previous
        if self.previous is None:
            self.emulate._cache.clear()


def nbytes(tensors: Iterable[Tensor | None]) -> int:
    """The bytes of distinct storages among `tensors` (parameters, gradients, states), without a tracker."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, Tensor):
            s = t.untyped_storage()
            seen[id(s)] = s.nbytes()
    return sum(seen.values())
