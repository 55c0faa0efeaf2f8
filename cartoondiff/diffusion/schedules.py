"""Noise schedules as pure functions T -> betas (T,) float64, one per conf/noise_schedule option."""

from __future__ import annotations

import math

import torch

from cartoondiff.runs.errors import UserError, is_int, is_number, require


class ScheduleError(UserError, ValueError):
    """A betas tensor that cannot define a diffusion process."""


def check_betas(betas: torch.Tensor) -> torch.Tensor:
    """Validate betas (T,): 1-D, non-empty, every value in (0, 1). Returns them as float64."""
    betas = torch.as_tensor(betas, dtype=torch.float64)
    if betas.dim() != 1 or betas.numel() < 1:
        raise ScheduleError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ScheduleError(
            f"betas must lie in (0, 1), got min {betas.min().item():.3g} "
            f"max {betas.max().item():.3g}"
        )
    return betas


def linear_betas(
    T: int,  # noqa: N803 -- the papers' symbol
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> torch.Tensor:
    """Linearly spaced betas from ``beta_start`` to ``beta_end`` inclusive (Ho et al. 2020, sec. 4).

    Returns:
        (T,) float64 with betas[0] == beta_start and betas[-1] == beta_end.
    """
    require(is_int(T) and T >= 1, "T", T, "an integer >= 1")
    require(is_number(beta_start) and 0 < beta_start < 1, "beta_start", beta_start,
            "a number in (0, 1)")
    require(is_number(beta_end) and beta_start <= beta_end < 1, "beta_end", beta_end,
            f"a number in [beta_start={beta_start}, 1)")
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(
    T: int,  # noqa: N803 -- the papers' symbol
    s: float = 0.008,
    max_beta: float = 0.999,
) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17).

    alpha_bar(t) = f(t) / f(0) with f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), and
    beta_t = 1 - alpha_bar(t) / alpha_bar(t-1), clipped at ``max_beta`` to avoid the
    singularity at t = T. Index i of the result is step t = i + 1.

    Returns:
        (T,) float64 in (0, max_beta].
    """
    require(is_int(T) and T >= 1, "T", T, "an integer >= 1")
    require(is_number(s) and s > 0, "s", s, "a number > 0")
    require(is_number(max_beta) and 0 < max_beta < 1, "max_beta", max_beta, "a number in (0, 1)")
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # (T+1,)
    alpha_bar = f / f[0]
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]  # (T,)
    return betas.clamp(max=max_beta)
