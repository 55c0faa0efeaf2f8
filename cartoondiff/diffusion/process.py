"""The forward (noising) process and the training loss; the network is passed in, never held.

Notation follows Ho et al. 2020 (DDPM): beta_t, alpha_t = 1 - beta_t,
alpha_bar_t = prod_{s<=t} alpha_s. Steps are 0-indexed: t in [0, T), so alpha_bar[0] = alpha_0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from cartoondiff.diffusion.schedules import check_betas
from cartoondiff.runs.errors import is_number, require

PREDICTIONS: tuple[str, ...] = ("eps", "v")
WEIGHTINGS: tuple[str, ...] = ("uniform", "min_snr")

# model(x_t (B,C,H,W), t (B,), ids (B,18) | None, drop (B,) bool | None) -> (B,C,H,W)
Model = Callable[..., torch.Tensor]


def rng_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    """Random numbers are drawn where the generator lives, then moved (keeps seeds portable)."""
    return generator.device if generator is not None else fallback


@dataclass(frozen=True, eq=False)
class Diffusion:
    """Gaussian diffusion defined by ``betas`` (T,); immutable, all derived tensors float64.

    Args:
        betas: (T,) values in (0, 1), e.g. from ``schedules.linear_betas``.
        prediction: what the model predicts: "eps" (the noise, Ho et al. 2020) or
            "v" = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 (Salimans & Ho 2022, sec. 4).
        p_uncond: probability that the training loss drops a sample's condition, so one
            network learns the conditional and the unconditional noise (classifier-free
            guidance, Ho & Salimans 2022, Algorithm 1); below 1, or nothing conditional is
            ever learned.
        weighting: the loss weight per step t: "uniform" (Ho et al. eq. 14) or "min_snr"
            (Hang et al. 2023): the implied x0 error is weighted min(SNR_t, snr_gamma), i.e.
            the eps error by min(SNR, gamma) / SNR and the v error by min(SNR, gamma) / (SNR + 1).
        snr_gamma: gamma of "min_snr" (Hang et al.'s 5).
    """

    betas: torch.Tensor
    prediction: str = "eps"
    p_uncond: float = 0.0
    weighting: str = "uniform"
    snr_gamma: float = 5.0
    alphas: torch.Tensor = field(init=False, repr=False)
    alpha_bar: torch.Tensor = field(init=False, repr=False)
    alpha_bar_prev: torch.Tensor = field(init=False, repr=False)
    sqrt_alpha_bar: torch.Tensor = field(init=False, repr=False)
    sqrt_one_minus_alpha_bar: torch.Tensor = field(init=False, repr=False)
    posterior_variance: torch.Tensor = field(init=False, repr=False)
    posterior_mean_coef1: torch.Tensor = field(init=False, repr=False)
    posterior_mean_coef2: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        require(self.prediction in PREDICTIONS, "prediction", self.prediction,
                f"one of {PREDICTIONS}")
        require(is_number(self.p_uncond) and 0 <= self.p_uncond < 1, "p_uncond", self.p_uncond,
                "a number in [0, 1)")
        require(self.weighting in WEIGHTINGS, "weighting", self.weighting, f"one of {WEIGHTINGS}")
        require(is_number(self.snr_gamma) and self.snr_gamma > 0, "snr_gamma", self.snr_gamma,
                "a number > 0")
        betas = check_betas(self.betas)  # (T,) float64
        alphas = 1.0 - betas
        alpha_bar = torch.cumprod(alphas, dim=0)
        alpha_bar_prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
        derived = {
            "betas": betas,
            "alphas": alphas,
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            "sqrt_alpha_bar": alpha_bar.sqrt(),
            "sqrt_one_minus_alpha_bar": (1.0 - alpha_bar).sqrt(),
            # q(x_{t-1} | x_t, x0) = N(coef1 x0 + coef2 x_t, beta_tilde_t I)  (Ho et al. eq. 6-7)
            "posterior_variance": betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar),
            "posterior_mean_coef1": betas * alpha_bar_prev.sqrt() / (1.0 - alpha_bar),
            "posterior_mean_coef2": (1.0 - alpha_bar_prev) * alphas.sqrt() / (1.0 - alpha_bar),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @property
    def T(self) -> int:  # noqa: N802 -- the papers' symbol
        """Number of diffusion steps."""
        return self.betas.numel()

    def to(self, device: torch.device | str) -> Diffusion:
        """A new Diffusion with its tensors on ``device`` (this one is unchanged)."""
        return replace(self, betas=self.betas.to(device))

    def at(self, a: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """a[t] shaped (B, 1, 1, 1) in x's dtype and device, to broadcast against x (B, C, H, W).

        Indexes where the table lives, so only the B values move (sampling keeps the table on
        the CPU and t on the model's device)."""
        a_t = a[t.to(a.device)].to(device=x.device, dtype=x.dtype)  # (B,)
        return a_t.view(-1, *([1] * (x.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (Ho et al. eq. 4).

        x0, noise: (B, C, H, W); t: (B,) long -> (B, C, H, W).
        """
        return (
            self.at(self.sqrt_alpha_bar, t, x0) * x0
            + self.at(self.sqrt_one_minus_alpha_bar, t, x0) * noise
        )

    def v_target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0 (Salimans & Ho 2022, sec. 4)."""
        return (
            self.at(self.sqrt_alpha_bar, t, x0) * noise
            - self.at(self.sqrt_one_minus_alpha_bar, t, x0) * x0
        )

    def predict_x0_eps(
        self, model_out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Model output (eps or v) at (x_t, t) -> (x0_hat, eps_hat), each (B, C, H, W).

        eps: x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab)   (eq. 4 solved for x0)
        v:   x0 = sqrt(ab) x_t - sqrt(1 - ab) v,  eps = sqrt(1 - ab) x_t + sqrt(ab) v
        """
        a = self.at(self.sqrt_alpha_bar, t, x_t)
        s = self.at(self.sqrt_one_minus_alpha_bar, t, x_t)
        if self.prediction == "eps":
            return (x_t - s * model_out) / a, model_out
        return a * x_t - s * model_out, s * x_t + a * model_out

    def loss(
        self,
        model: Model,
        x0: torch.Tensor,
        ids: torch.Tensor | None,
        generator: torch.Generator | None = None,
        t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Simple loss: E_{t, eps} || target - model(x_t, t, ids, drop) ||^2 (Ho et al. eq. 14).

        Args:
            model: called as model(x_t, t, ids, drop); ``drop`` (B,) bool marks the samples
                whose condition is dropped (probability ``p_uncond``).
            x0: (B, C, H, W) clean images in the data range.
            ids: (B, 18) attribute ids, or None for an unconditional model.
            generator: draws t, eps and the drop mask; None uses the global RNG.
            t: (B,) steps to use instead of uniform random ones.
        Returns:
            scalar float32 mean squared error against eps, or against v for prediction="v".
        """
        B, dev = x0.shape[0], x0.device
        rd = rng_device(generator, dev)
        if t is None:
            t = torch.randint(0, self.T, (B,), generator=generator, device=rd).to(dev)
        noise = torch.randn(x0.shape, generator=generator, device=rd, dtype=x0.dtype).to(dev)
        drop = None
        if ids is not None and self.p_uncond > 0:
            drop = (torch.rand(B, generator=generator, device=rd) < self.p_uncond).to(dev)
        x_t = self.q_sample(x0, t, noise)  # (B, C, H, W)
        target = noise if self.prediction == "eps" else self.v_target(x0, t, noise)
        out = model(x_t, t, ids, drop)  # (B, C, H, W)
        if self.weighting == "uniform":
            return F.mse_loss(out.float(), target.float())
        per_sample = (out.float() - target.float()).pow(2).mean(dim=(1, 2, 3))  # (B,)
        snr = self.at(self.alpha_bar / (1.0 - self.alpha_bar), t, per_sample[:, None]).flatten()
        weight = snr.clamp(max=self.snr_gamma) / (snr if self.prediction == "eps" else snr + 1)
        return (per_sample * weight).mean()  # min-SNR-gamma (Hang et al. 2023, eq. 9)
