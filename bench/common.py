"""Helpers shared by the benchmarks: the project's model from conf/, one training step, timing.

Only torch and the project itself are needed here (the peers live in train_throughput.py).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from cartoondiff.config import build_model
from cartoondiff.runs.cli import compose

REPO = Path(__file__).resolve().parents[1]

# forward(x_t (B,3,H,W), t (B,) long) -> (B,3,H,W): the one call a benchmark step makes.
Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """conf/config.yaml composed with Hydra-style ``overrides`` (e.g. ``model=blog``)."""
    return compose(overrides)


def project_config(overrides: Sequence[str], image_size: int) -> DictConfig:
    """The composed config with the model at ``image_size``: attention stays at the preset's
    UNet levels at any size, so the network and its parameter count are the same. The
    benchmarks measure the blog's design (``recipe=blog``) unless ``overrides`` say otherwise."""
    return compose_config(["recipe=blog", *overrides, f"data.image_size={image_size}"])


def count_params(model: torch.nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def project_forward(model: torch.nn.Module, batch: int, device: torch.device) -> Forward:
    """A Denoiser called as in training: random attribute ids, 10% of them dropped (CFG)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.stack([torch.randint(0, 3, (batch,), generator=g) for _ in range(18)], 1)
    ids, drop = ids.to(device), (torch.rand(batch, generator=g) < 0.1).to(device)
    conditional = getattr(model, "conditional", False)
    return lambda x, t: model(x, t, ids if conditional else None, drop if conditional else None)


def build_project(overrides: Sequence[str], image_size: int, device: torch.device
                  ) -> tuple[torch.nn.Module, DictConfig]:
    """A fresh model from the preset yaml, on ``device``, in train mode."""
    cfg = project_config(overrides, image_size)
    torch.manual_seed(0)
    return build_model(cfg).to(device).train(), cfg


def model_kwargs(cfg: DictConfig) -> dict:
    """The UNet's keyword arguments, resolved, as printed in the tables."""
    args = OmegaConf.to_container(cfg.model.unet, resolve=True)
    args.pop("_target_", None)
    return args


@dataclass
class Step:
    """One training step (forward, MSE to the noise, backward, AdamW) on a fixed batch."""

    forward: Forward
    optimizer: torch.optim.Optimizer
    x_t: torch.Tensor  # (B, 3, H, W)
    t: torch.Tensor  # (B,)
    noise: torch.Tensor  # (B, 3, H, W)
    autocast: torch.dtype | None = None

    def __call__(self) -> float:
        ctx = (torch.autocast(self.x_t.device.type, dtype=self.autocast) if self.autocast
               else nullcontext())
        with ctx:
            out = self.forward(self.x_t, self.t)
        loss = F.mse_loss(out.float(), self.noise)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())  # also waits for the device


def make_step(model: torch.nn.Module, forward: Forward, batch: int, image_size: int,
              device: torch.device, autocast: torch.dtype | None = None,
              memory_format: torch.memory_format | None = None) -> Step:
    """A ``Step`` for ``model`` on a random batch (seeded, the same for every model).

    ``memory_format``: convert the model's 4-d weights and the batch to it first
    (``torch.channels_last``, or ``torch.contiguous_format`` for NCHW).
    """
    g = torch.Generator().manual_seed(1)
    shape = (batch, 3, image_size, image_size)
    x0, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    x_t = (0.5 * x0 + 0.75**0.5 * noise).to(device)
    if memory_format is not None:
        model.to(memory_format=memory_format)
        x_t = x_t.contiguous(memory_format=memory_format)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    return Step(forward, opt, x_t, t, noise.to(device), autocast)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_rounds(steps: dict[str, Callable[[], object]], rounds: int, per_round: int,
                device: torch.device, warmup: int = 1) -> dict[str, tuple[float, float]]:
    """Median (wall, process CPU) seconds per call of each function, interleaved by round.

    Interleaving spreads the load of a shared machine evenly over all of them; the median of
    the rounds drops the rounds that another process disturbed. The process CPU time is what
    the threads of this process got: with one thread on a busy machine it stays close to the
    idle-machine wall time while the wall time grows with the others' load.
    """
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(per_round):
                fn()
            sync(device)
            times[name].append(((time.perf_counter() - wall) / per_round,
                                (time.process_time() - cpu) / per_round))
    return {name: (statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts))
            for name, ts in times.items()}


# Step variants both benchmarks accept, joined by "+", e.g. "channels_last+bf16".
OPTIONS = ("fp32", "bf16", "compile", "channels_last", "nchw")


def option_combo(text: str) -> str:
    """argparse type for a variant: options from OPTIONS joined by '+'."""
    bad = [o for o in text.split("+") if o not in OPTIONS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown option(s) {bad} in {text!r}: use {OPTIONS}")
    return text
