"""Exponential moving average of model weights, used for sampling and evaluation."""

from __future__ import annotations

import copy

import torch
from torch import nn

from cartoondiff.runs.errors import is_number, require


class EMA:
    """Keeps ``shadow = decay * shadow + (1 - decay) * weights`` after every optimizer step.

    The shadow is a full copy of the model (buffers included), so it can be called directly
    for sampling. The decay ramps up from 0 so that early samples are not dominated by the
    random initialisation: decay_t = min(decay, (1 + t) / (10 + t)).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        require(is_number(decay) and 0.0 <= decay < 1.0, "decay", decay, "a number in [0, 1)")
        self.decay = decay
        self.num_updates = 0
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        self.num_updates += 1
        ema_params = list(self.shadow.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for b_ema, b in zip(self.shadow.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state["shadow"])
        self.num_updates = int(state["num_updates"])
