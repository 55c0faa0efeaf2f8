"""Learning-rate schedules: built from ``conf/optim`` (and checked) before the run starts,
then called with the optimizer and the run's length (``total_steps``, ``steps_per_epoch``:
optimizer steps), which the training loop knows only once the data are counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from cartoondiff.config import build
from cartoondiff.runs.errors import ConfigError, is_int, is_number, require


@dataclass(frozen=True)
class WarmupCosine:
    """LR factor rising linearly over ``warmup_steps``, then a half cosine down to
    ``min_lr_ratio`` at the run's last step (and staying there)."""

    warmup_steps: int
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        require(is_int(self.warmup_steps) and self.warmup_steps >= 0, "warmup_steps",
                self.warmup_steps, "an integer >= 0")
        require(is_number(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1, "min_lr_ratio",
                self.min_lr_ratio, "a number in [0, 1]")

    def __call__(self, optimizer: Optimizer, *, total_steps: int,
                 steps_per_epoch: float) -> LambdaLR:  # noqa: ARG002 -- every schedule's facts
        warmup, low = self.warmup_steps, self.min_lr_ratio

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress))

        return LambdaLR(optimizer, factor)


@dataclass(frozen=True)
class StepDecay:
    """LR factor ``gamma ** floor(epoch / step_epochs)``: the blog's step decay, counted in
    epochs so that it means the same on 10k and 100k avatars."""

    step_epochs: float
    gamma: float

    def __post_init__(self) -> None:
        require(is_number(self.step_epochs) and self.step_epochs > 0, "step_epochs",
                self.step_epochs, "a number > 0")
        require(is_number(self.gamma) and 0 < self.gamma <= 1, "gamma", self.gamma,
                "a number in (0, 1]")

    def __call__(self, optimizer: Optimizer, *, total_steps: int,  # noqa: ARG002
                 steps_per_epoch: float) -> LambdaLR:
        return LambdaLR(optimizer, lambda step: self.gamma ** math.floor(
            step / steps_per_epoch / self.step_epochs))


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
