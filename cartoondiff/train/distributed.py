"""Data-parallel training through torch.distributed (``torchrun ... trainer.strategy=ddp``).

Every rank holds the same weights (DDP averages gradients), so EMA, clipping and the LR
schedule stay identical without extra communication. The global batch (``data.batch_size``)
is split across ranks from the same shuffled order, which plays the role of a
DistributedSampler while keeping resume exact: rank r takes items r, r + W, r + 2W, ...
Rank 0 alone writes logs, grids and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cartoondiff.runs.errors import ArgumentError, require

STRATEGIES = ("single", "ddp")


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job: ``rank`` of ``world_size`` (1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global batch of indices (B,) -> (B / world_size,)."""
        return idx[self.rank :: self.world_size]

    def mean(self, value: float, device: torch.device) -> float:
        """Average of a scalar over ranks (the loss every rank logs and checks for NaN)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t) / self.world_size

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is True on some rank (e.g. a stop signal)."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def max_param_difference(self, model: torch.nn.Module) -> float:
        """Largest difference of any parameter between ranks (0 when they agree)."""
        if not self.enabled:
            return 0.0
        flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
        hi, lo = flat.clone(), flat.clone()
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        return float((hi - lo).max())


def setup(strategy: str, device_name: str) -> tuple[Distributed, str]:
    """Join the process group for ``ddp`` (env vars from torchrun); returns the context and the
    device name this rank should use (``cuda:LOCAL_RANK`` on GPUs)."""
    require(strategy in STRATEGIES, "strategy", strategy, f"one of {STRATEGIES}")
    if strategy == "single":
        return Distributed(), device_name
    if "RANK" not in os.environ:
        raise ArgumentError("strategy", strategy, "single, or ddp under torchrun: torchrun "
                            "--nproc_per_node=N run.py trainer.strategy=ddp ...")
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device_name = f"cuda:{local}"
    elif device_name == "auto":
        device_name = "cpu"
    return Distributed(dist.get_rank(), dist.get_world_size()), device_name


def teardown(ctx: Distributed) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
