"""The random numbers a run trains from, kept apart from everything else the run does.

Training draws in two ways: explicitly, the timesteps, noise and condition drop of each
batch (``TrainingRandomness.noise``, a ``torch.Generator``), and implicitly, dropout inside
the model, which can only draw from torch's global generator. Everything else a run does
(training or loading the judge, evaluating, drawing grids, starting W&B) may draw from that
global generator too, so training keeps a global state of its own: ``active()`` installs it
around each optimizer step and puts the outer one back after. Nothing outside a step can
advance the training's streams, so the same command gives the same weights whether the judge
cache was cold or warm, and a checkpoint holds exactly the state that continues training.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices): the model's initial weights come from it."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class TrainingRandomness:
    """The training's two streams on ``device``: ``noise`` (a generator passed to the loss)
    and the global-generator state that dropout draws from inside ``active()``."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.device, self._cuda = device, device.type == "cuda"
        self.noise = torch.Generator(device)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Both streams from ``seed`` (a fresh run, or a DDP rank > 0 after a resume)."""
        self.noise.manual_seed(seed)
        self._global = torch.Generator(self.device).manual_seed(seed).get_state()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Inside: torch's global generator (on ``device``) is the training's own; outside,
        it is whatever it was before, untouched by what ran inside."""
        with torch.random.fork_rng(devices=[self.device] if self._cuda else []):
            if self._cuda:
                torch.cuda.set_rng_state(self._global, self.device)
            else:
                torch.set_rng_state(self._global)
            try:
                yield
            finally:
                self._global = (torch.cuda.get_rng_state(self.device) if self._cuda
                                else torch.get_rng_state())

    def state_dict(self) -> dict[str, Any]:
        """Tensors only, so a checkpoint loads with ``weights_only``."""
        return {"noise": self.noise.get_state(), "global": self._global.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.noise.set_state(state["noise"].cpu())
        self._global = state["global"].cpu()
