"""Learning-rate schedules not in torch: linear warmup then cosine decay."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1
) -> LambdaLR:
    """LR factor rises linearly over ``warmup_steps``, then follows a half cosine down to
    ``min_lr_ratio`` at ``total_steps`` (and stays there)."""
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(
            f"optim.scheduler: need warmup_steps >= 0 and total_steps >= 1, "
            f"got {warmup_steps} and {total_steps}"
        )

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
