"""Learning-rate schedules, each told the run's length when the optimizer exists.

Both take ``total_steps`` and ``steps_per_epoch`` (optimizer steps), which the training loop
knows only once the data are counted; the rest comes from ``conf/optim``.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from cartoondiff.errors import is_int, is_number, require


def warmup_cosine(
    optimizer: Optimizer, warmup_steps: int, min_lr_ratio: float = 0.1, *, total_steps: int,
    steps_per_epoch: float,  # noqa: ARG001 -- the same run facts for every schedule
) -> LambdaLR:
    """LR factor rises linearly over ``warmup_steps``, then follows a half cosine down to
    ``min_lr_ratio`` at ``total_steps`` (and stays there)."""
    require(is_int(warmup_steps) and warmup_steps >= 0, "warmup_steps", warmup_steps,
            "an integer >= 0")
    require(is_number(min_lr_ratio) and 0 <= min_lr_ratio <= 1, "min_lr_ratio", min_lr_ratio,
            "a number in [0, 1]")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def step_decay(
    optimizer: Optimizer, step_epochs: float, gamma: float, *,
    total_steps: int,  # noqa: ARG001 -- the same run facts for every schedule
    steps_per_epoch: float,
) -> LambdaLR:
    """LR factor ``gamma ** floor(epoch / step_epochs)``: the blog's step decay, counted in
    epochs so that it means the same on 10k and 100k avatars."""
    require(is_number(step_epochs) and step_epochs > 0, "step_epochs", step_epochs,
            "a number > 0")
    require(is_number(gamma) and 0 < gamma <= 1, "gamma", gamma, "a number in (0, 1]")
    return LambdaLR(optimizer, lambda step: gamma ** math.floor(step / steps_per_epoch
                                                                 / step_epochs))
