"""Learning-rate schedules, each told the run's length when the optimizer exists.

Both take ``total_steps`` and ``steps_per_epoch`` (optimizer steps), which the training loop
knows only once the data are counted; the rest comes from ``conf/optim``.
"""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig, OmegaConf
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from cartoondiff.config import build
from cartoondiff.runs.errors import ConfigError, is_int, is_number, require


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


def apply_optim_settings(cfg: DictConfig, optimizer: Optimizer, scheduler: LambdaLR) -> None:
    """On resume, a named ``optim.*`` change takes effect: the checkpoint's optimizer and
    schedule carry the old hyperparameters (lr, betas, ...; the schedule's base LR), so those
    of ``cfg.optim.optimizer`` are set over them; the moments and the step stay. The
    schedule's shape (warmup, decay) is rebuilt from the config anyway; its next LR is set
    here."""
    node = OmegaConf.to_container(cfg.optim.optimizer, resolve=True)
    today = build(cfg, "optim.optimizer", params=[torch.zeros(1, requires_grad=True)])
    settings = {k: today.defaults[k] for k in node if k in today.defaults}
    for group in optimizer.param_groups:
        group.update(settings)
        group["initial_lr"] = settings.get("lr", group["initial_lr"])
    if not hasattr(scheduler, "lr_lambdas"):  # the project's schedules are all LambdaLR
        raise ConfigError(f"resume: optim changes need a LambdaLR schedule to take effect "
                          f"({type(scheduler).__name__} is not one): start a new run")
    scheduler.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs,
                                   scheduler.lr_lambdas, strict=True):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]  # what get_last_lr says
