"""Which images go into which batch: shuffled epochs that are reproducible and resumable.

The order of epoch ``e`` is a permutation drawn from a generator seeded with (seed, e), so a
resumed run only needs (epoch, batch index) to continue exactly where it stopped. Batches
index the in-memory uint8 image tensor directly: no per-item Dataset, no worker processes.
"""

from __future__ import annotations

import torch


class BatchOrder:
    """Reproducible shuffled batches over ``n`` >= ``batch_size`` items (the data module's
    rule); the last partial batch is dropped."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size

    def indices(self, epoch: int, batch: int) -> torch.Tensor:
        """Item indices (batch_size,) of batch ``batch`` in epoch ``epoch``."""
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm[batch * self.batch_size : (batch + 1) * self.batch_size]
