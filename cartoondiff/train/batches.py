"""Which images go into which batch: shuffled epochs that are reproducible and resumable.

The order of epoch ``e`` is a permutation drawn from a generator seeded with (seed, e), so a
resumed run only needs (epoch, batch index) to continue exactly where it stopped. Batches
index the in-memory uint8 image tensor directly: no per-item Dataset, no worker processes.
"""

from __future__ import annotations

import torch

from cartoondiff.runs.errors import ConfigError


class BatchOrder:
    """Reproducible shuffled batches over ``n`` items (the last partial batch is dropped)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < batch_size:  # (batch_size >= 1 is checked by the data module)
            raise ConfigError(f"data.batch_size={batch_size} is invalid: expected at most the "
                              f"{n} images of the data (data.n for synthetic avatars)")
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
