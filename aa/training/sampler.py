"""Which samples each process takes at each step, identical for any number of processes.

The run sees one endless stream of dataset indices: epoch e is a permutation seeded by (seed, e). Global step s
consumes the stream positions [s * B, (s + 1) * B) for the global batch B = batch x processes x accumulation; every
sample also gets its own seed from its position, so its augmentation and noise don't depend on who draws it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Layout:
    """How a global batch is split: per-process micro-batch, processes, gradient-accumulation steps."""

    batch: int
    world: int = 1
    accumulation: int = 1

    @property
    def global_batch(self) -> int:
        return self.batch * self.world * self.accumulation


@lru_cache(maxsize=4)
def _permutation(num_items: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_items)


def stream_index(position: int, num_items: int, seed: int) -> int:
    """The dataset index at a position of the endless stream of seeded permutations."""
    epoch, offset = divmod(position, num_items)
    return int(_permutation(num_items, seed, epoch)[offset])


def sample_seed(position: int, seed: int) -> int:
    """A per-sample seed: the same sample position always gets the same randomness."""
    return int(np.random.default_rng([seed, position, 1]).integers(2 ** 62))


def micro_batch(step: int, micro: int, rank: int, layout: Layout, num_items: int,
                seed: int) -> list[tuple[int, int, int]]:
    """(position, dataset index, sample seed) of the samples of one process's micro-batch."""
    first = step * layout.global_batch + (micro * layout.world + rank) * layout.batch
    return [(p, stream_index(p, num_items, seed), sample_seed(p, seed)) for p in range(first, first + layout.batch)]
