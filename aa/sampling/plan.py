"""What the denoising loop computes once per video instead of once per window and step.

The Pose Guider's features, the window indices and blend weights and the timesteps do not change across the DDIM
steps: they are put on the device once, so the step loop only launches device work and never waits for the host.
The Pose Guider's features are kept for the whole video while they fit a memory budget; past it (a long video) they
are recomputed per window, so memory stays bounded by the window.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from aa.models.bundle import module_dtype
from aa.models.pose_guider import PoseGuider
from aa.sampling.windows import blend_weights, step_offset, window_schedule

POSE_BUDGET_BYTES = 2 * 2**30  # Pose Guider features kept for the whole video up to this size (SD: ~500 frames)


def pose_tensor(poses: Sequence[np.ndarray] | np.ndarray, indices: Sequence[int]) -> Tensor:
    """Pose images (uint8 h w 3) at `indices` -> (f, 3, h, w) in [0, 1] (the released Pose Guider's input range)."""
    frames = np.stack([np.asarray(poses[i]) for i in indices])
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


class PoseFeatures:
    """The Pose Guider's output for any window of frames: computed once for the video when it fits `budget`
    bytes (a few frames at a time), else per window on demand."""

    def __init__(self, guider: PoseGuider, poses: Sequence[np.ndarray] | np.ndarray, device: torch.device,
                 chunk: int = 24, budget: int | None = None) -> None:
        self.guider, self.poses, self.device = guider, poses, device
        self.dtype = module_dtype(guider)
        n, height, width = len(poses), *np.asarray(poses[0]).shape[:2]
        down = 2 ** (len(guider.cfg.channels) - 1)
        size = n * guider.cfg.out_channels * (height // down) * (width // down) * self.dtype.itemsize
        self.all: Tensor | None = None
        if size <= (POSE_BUDGET_BYTES if budget is None else budget):
            self.all = torch.cat([self.compute(range(i, min(i + chunk, n))) for i in range(0, n, chunk)])

    def compute(self, frames: Sequence[int]) -> Tensor:
        """(f, c0, h, w) features of the given frames."""
        return self.guider(pose_tensor(self.poses, frames).to(self.device, self.dtype, non_blocking=True))

    def __call__(self, frames: Sequence[int], index: Tensor) -> Tensor:
        """Features of one window: `frames` as a list and as a device index tensor (no host round trip)."""
        return self.compute(frames) if self.all is None else self.all.index_select(0, index)


class WindowPlan:
    """Every step's windows as (frames, device index, device blend weights), built before the loop."""

    def __init__(self, num_frames: int, num_steps: int, window: int, overlap: int, wrap: bool, shift: bool,
                 blend: str, device: torch.device) -> None:
        def offset(k: int) -> int:
            return step_offset(k, window, overlap) if shift and not wrap else 0
        cache: dict[int, list[tuple[list[int], Tensor, Tensor]]] = {}
        self.steps = []
        for k in range(num_steps):
            o = offset(k)
            if o not in cache:
                cache[o] = [(frames, torch.tensor(frames, device=device),
                             blend_weights(len(frames), blend).to(device)[:, None, None, None])
                            for frames in window_schedule(num_frames, window, overlap, wrap, offset=o)]
            self.steps.append(cache[o])

    def __getitem__(self, step: int) -> list[tuple[list[int], Tensor, Tensor]]:
        return self.steps[step]


def prepare_unet(unet: nn.Module, pose_guider: nn.Module, compile: bool = False) -> None:
    """Ready the step for its device: channels-last convolutions on CUDA (the transformer and temporal layers then
    hand on channels-last views without copies), and optionally `torch.compile` of the UNet with static shapes (one
    graph, no breaks: tests/test_fast_path.py; compiled once per window length)."""
    if next(unet.parameters()).device.type == "cuda":
        unet.to(memory_format=torch.channels_last)
        pose_guider.to(memory_format=torch.channels_last)
    if compile:
        unet.compile(dynamic=False)
