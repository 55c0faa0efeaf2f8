"""Memory anatomy of one training step, as in the blog's last table, beside a measured peak.

    python -m cartoondiff.train.memory model=blog data.batch_size=128 tau.projections=2x
    python -m cartoondiff.train.memory model=small measure=false

Arguments are Hydra overrides of conf/config.yaml, plus ``measure=true|false``. Rows:

- parameters: trainable parameters of the composed model;
- weights 4 B, gradients 4 B, Adam state 8 B (exp_avg + exp_avg_sq) and the EMA copy 4 B per
  parameter (fp32; the training loop keeps an EMA shadow the blog's table has no row for);
- activations: *estimated* as the bytes of the tensors autograd saves for backward during one
  training forward (``saved_tensors_hooks``, storages counted once, parameters excluded). That
  is exact for what autograd keeps; it is measured at batch 1 and 2 and extrapolated linearly
  to the batch (activations are linear in it), so a 128-image batch costs no memory to
  estimate. Temporaries that live inside one op or one backward step are not in it.

Beside the total, the peak of one real training step at the batch: on CUDA
``torch.cuda.max_memory_allocated``; on the CPU the peak of live torch allocations replayed
from the profiler's memory events, plus what was live before the step (a rough measure: it
sees torch's allocations only, not the allocator's or the libraries' own buffers).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from cartoondiff.config import build, build_diffusion, build_model, named
from cartoondiff.data.module import MAX_IMAGE_SIZE
from cartoondiff.diffusion import Diffusion
from cartoondiff.runs import cli
from cartoondiff.runs.devices import autocast_dtype, pick_device, precision_label
from cartoondiff.runs.errors import ConfigError, is_int
from cartoondiff.train.ema import EMA

USAGE = "python -m cartoondiff.train.memory [measure=true|false] [hydra overrides ...]"
OPTIONS = {"measure": cli.Option(True, "also run one real training step and report its peak "
                                       "memory beside the estimate")}
MiB = 2**20


@dataclass(frozen=True)
class Anatomy:
    """Bytes of one training step's state at ``batch``; ``activations`` is an estimate."""

    parameters: int
    batch: int
    weights: int
    gradients: int
    adam: int
    ema: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.adam + self.ema + self.activations


class _Batch:
    """A fixed random training batch: x0 (B, 3, S, S) in [-1, 1] and ids (B, 18)."""

    def __init__(self, batch: int, image_size: int, conditional: bool, device: torch.device):
        g = torch.Generator().manual_seed(0)
        self.x0 = (torch.rand(batch, 3, image_size, image_size, generator=g) * 2 - 1).to(device)
        self.ids = (torch.randint(0, 3, (batch, 18), generator=g).to(device) if conditional
                    else None)


def _loss(model: torch.nn.Module, diffusion: Diffusion, b: _Batch, amp: torch.dtype | None
          ) -> torch.Tensor:
    """The training loss of one batch, as the training loop computes it."""
    with torch.autocast(b.x0.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        return diffusion.loss(model, b.x0, b.ids, generator=None)


def saved_tensor_bytes(model: torch.nn.Module, diffusion: Diffusion, batch: int, image_size: int,
                       amp: torch.dtype | None) -> int:
    """Bytes autograd keeps for backward after one training forward at ``batch``.

    Each storage is counted once (a tensor saved by two ops, or views of one buffer); the
    parameters' storages are left out, since the weights have their own row.
    """
    device = next(model.parameters()).device
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    b = _Batch(batch, image_size, getattr(model, "conditional", False), device)
    torch.manual_seed(0)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = _loss(model, diffusion, b, amp)
    del loss  # frees the graph and what it saved
    return sum(seen.values())


def estimate(model: torch.nn.Module, diffusion: Diffusion, batch: int, image_size: int,
             amp: torch.dtype | None, ema: bool) -> Anatomy:
    """The rows of the table for ``model`` trained with Adam at ``batch``."""
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    one, two = (saved_tensor_bytes(model, diffusion, b, image_size, amp) for b in (1, 2))
    activations = one + (two - one) * (batch - 1)  # a + b * B through (1, one) and (2, two)
    return Anatomy(parameters=n, batch=batch, weights=4 * n, gradients=4 * n, adam=8 * n,
                   ema=4 * n if ema else 0, activations=activations)


def measure_peak(model: torch.nn.Module, diffusion: Diffusion, cfg: DictConfig, batch: int,
                 amp: torch.dtype | None) -> tuple[int, str]:
    """(peak bytes, how) of one steady-state optimizer step (Adam state already there), EMA
    update included. The rows above add up to an upper bound of it: during backward the saved
    activations are freed as the gradients appear, so the two never peak together."""
    device = next(model.parameters()).device
    b = _Batch(batch, int(cfg.data.image_size), getattr(model, "conditional", False), device)
    ema = EMA(model, float(cfg.trainer.ema_decay)) if cfg.trainer.ema_decay else None
    optimizer = build(cfg, "optim.optimizer", params=model.parameters())

    def step() -> None:
        _loss(model, diffusion, b, amp).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model)

    step()  # the first step creates the Adam state; measure the next, steady one
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated"
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    tensors = [*model.parameters(), *model.buffers(), b.x0, *state]
    if ema is not None:
        tensors += [*ema.shadow.parameters(), *ema.shadow.buffers()]
    live = sum(t.untyped_storage().nbytes() for t in tensors)  # held before the step
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # Replay allocations (+) and frees (-) in time order; the highest running sum is the peak.
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    peak = max(itertools.accumulate((e.nbytes() for e in events), initial=0))
    return live + peak, "cpu: live tensors + profiler allocation replay (rough)"


def format_table(a: Anatomy, measured: tuple[int, str] | None, title: str) -> str:
    """The blog's table: rows, bytes per parameter, memory; then the measured peak."""
    n = a.parameters
    rows = [("model weights", a.weights, "computed: 4 B x params (fp32)"),
            ("Adam state", a.adam, "computed: exp_avg + exp_avg_sq, 8 B x params"),
            ("gradients", a.gradients, "computed: 4 B x params"),
            ("EMA weights", a.ema, "computed: the loop's EMA shadow, 4 B x params"),
            (f"activations (batch {a.batch})", a.activations,
             "estimated: bytes saved for backward, batch 1 and 2 -> linear"),
            ("total", a.total, "sum of the rows")]
    lines = [title, f"{'parameters':<26} {n:>14,}", f"{'row':<26} {'B/param':>8} "
             f"{'memory':>12}  how"]
    for name, nbytes, how in rows:
        if nbytes or name != "EMA weights":
            lines.append(f"{name:<26} {nbytes / n:>8.1f} {nbytes / MiB:>9.1f} MiB  {how}")
    if measured is None:
        lines.append(f"{'measured peak':<26} {'':>8} {'not measured':>13}")
    else:
        peak, how = measured
        lines.append(f"{'measured peak, one step':<26} {peak / n:>8.1f} {peak / MiB:>9.1f} MiB  "
                     f"{how}; estimate / measured = {a.total / peak:.2f}")
    return "\n".join(lines)


def _available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def main(argv: Sequence[str]) -> tuple[Anatomy, tuple[int, str] | None]:
    """Compose the config from ``argv``, print the table, return (estimate, measured)."""
    args = cli.parse(argv, OPTIONS, USAGE, overrides=True, about=__doc__,
                     example="python -m cartoondiff.train.memory model=blog data.batch_size=128")
    measure = args.options["measure"]
    if not isinstance(measure, bool):
        raise cli.UsageError(f"measure={measure!r} is invalid: expected true or false")
    overrides = args.overrides + args.positional
    cfg = cli.compose(overrides)
    with named("trainer.device"):
        device = pick_device(cfg.trainer.device)
    with named("trainer.precision"):
        amp = autocast_dtype(cfg.trainer.precision, device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device).train()
    diffusion = build_diffusion(cfg).to(device)
    batch, size = cfg.data.batch_size, cfg.data.image_size
    if not (is_int(batch) and batch >= 1):
        raise ConfigError(f"data.batch_size={batch!r} is invalid: expected an integer >= 1")
    if not (is_int(size) and 8 <= size <= MAX_IMAGE_SIZE):
        raise ConfigError(f"data.image_size={size!r} is invalid: expected an integer in "
                          f"[8, {MAX_IMAGE_SIZE}]")
    a = estimate(model, diffusion, batch, size, amp, ema=bool(cfg.trainer.ema_decay))
    free = _available_bytes() if measure and device.type == "cpu" else None
    if free is not None and a.total > 0.6 * free:
        print(f"not measuring: the estimate ({a.total / MiB:,.0f} MiB) is over 60% of this "
              f"machine's available memory ({free / MiB:,.0f} MiB); run with a smaller "
              "data.batch_size, or on a GPU")
        measure = False
    measured = measure_peak(model, diffusion, cfg, batch, amp) if measure else None
    title = (f"memory anatomy of one training step: {' '.join(overrides) or 'defaults'} "
             f"({size}x{size}, batch {batch}, {precision_label(amp)}, {device.type})")
    print(format_table(a, measured, title))
    return a, measured


if __name__ == "__main__":
    cli.execute(main)
