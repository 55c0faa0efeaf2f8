"""Reverse-process samplers (DDPM, DDIM, DPM-Solver++(2M)) and classifier-free guidance.

Each sampler is one function over a ``Diffusion`` and a ``denoise(x, t)`` closure that already
applies guidance; a ``Sampler`` (a ``conf/sampler`` option) checks its settings and wires them
together. Steps are 0-indexed (t in [0, T)). DDPM visits all T steps; DDIM visits ``steps``
steps evenly spaced in t from T-1 down to 0, DPM-Solver++ ``steps`` steps evenly spaced in
log-SNR; both then jump to clean data (alpha_bar = 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from cartoondiff.attributes import NUM_ATTRIBUTES
from cartoondiff.diffusion.process import Diffusion, Model, rng_device
from cartoondiff.runs.errors import ArgumentError, is_int, is_number, require

SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpmpp2m")

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> eps or v
Clip = Callable[[torch.Tensor], torch.Tensor]


def guided_eps(
    model: Model, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor | None, w: float
) -> torch.Tensor:
    """Classifier-free guidance: (1 + w) eps(x, c) - w eps(x, null) (Ho & Salimans 2022, eq. 6).

    w = 0 is plain conditional sampling (one forward pass); with ids None (an unconditional
    model or the null condition) w is ignored. Both branches run as one batch of 2B. The
    combination is linear, so it is the same guidance when the model predicts v.

    x: (B, C, H, W), t: (B,), ids: (B, 18) or None -> (B, C, H, W).
    """
    if ids is None or w == 0 or not getattr(model, "conditional", True):
        return model(x, t, ids, None)
    B = x.shape[0]
    drop = torch.arange(2 * B, device=x.device) >= B  # second half: null context
    out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([ids, ids]), drop)
    cond, uncond = out.chunk(2)  # (B, C, H, W) each
    return (1 + w) * cond - w * uncond


def timesteps(T: int, steps: int) -> list[int]:  # noqa: N803 -- the papers' symbol
    """``steps`` distinct steps evenly spaced from T-1 down to 0 (both ends included);
    1 <= steps <= T (``Sampler.check_steps``)."""
    return torch.linspace(T - 1, 0, steps, dtype=torch.float64).round().long().tolist()


def logsnr_timesteps(alpha_bar: torch.Tensor, steps: int) -> list[int]:
    """``steps`` distinct steps from T-1 down to 0, evenly spaced in log-SNR
    lambda = log(sqrt(ab) / sqrt(1 - ab)) as far as integer steps allow (Lu et al. 2022, sec. 3.3
    recommend this spacing for low-resolution images); 1 <= steps <= T (``Sampler.check_steps``)."""
    T = alpha_bar.numel()
    lam = 0.5 * torch.log(alpha_bar / (1 - alpha_bar))  # (T,), decreasing in t
    targets = torch.linspace(float(lam[-1]), float(lam[0]), steps, dtype=torch.float64)
    nearest = (lam[None, :] - targets[:, None]).abs().argmin(dim=1).tolist()  # (steps,)
    out: list[int] = []
    for k, i in enumerate(nearest):  # strictly decreasing, leaving room for the steps after k
        hi = T - 1 if k == 0 else out[-1] - 1
        out.append(max(min(i, hi), steps - 1 - k))
    return out


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    dev = rng_device(generator, x.device)
    return torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)


def _denoise_step(
    d: Diffusion, denoise: Denoise, x: torch.Tensor, i: int, clip: Clip
) -> tuple[torch.Tensor, torch.Tensor]:
    """One model call at step i: (x0_hat clipped, eps consistent with it); x: (B, C, H, W)."""
    t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
    x0, _ = d.predict_x0_eps(denoise(x, t), x, t)
    x0 = clip(x0)
    eps = (x - float(d.sqrt_alpha_bar[i]) * x0) / float(d.sqrt_one_minus_alpha_bar[i])
    return x0, eps


def ddpm(
    d: Diffusion, denoise: Denoise, x: torch.Tensor, generator: torch.Generator | None, clip: Clip
) -> torch.Tensor:
    """Ancestral sampling over all T steps (Ho et al. 2020, Algorithm 2).

    x_{t-1} ~ q(x_{t-1} | x_t, x0_hat) = N(coef1 x0_hat + coef2 x_t, beta_tilde_t I) (eq. 6-7),
    which equals Algorithm 2's mean when x0_hat is not clipped, with sigma_t^2 = beta_tilde_t.
    """
    for i in reversed(range(d.T)):
        x0, _ = _denoise_step(d, denoise, x, i, clip)
        x = float(d.posterior_mean_coef1[i]) * x0 + float(d.posterior_mean_coef2[i]) * x
        if i > 0:  # beta_tilde_0 = 0: the last step is the mean
            x = x + float(d.posterior_variance[i]) ** 0.5 * _noise(x, generator)
    return x


def ddim(
    d: Diffusion,
    denoise: Denoise,
    x: torch.Tensor,
    generator: torch.Generator | None,
    clip: Clip,
    steps: int,
    eta: float,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) on ``steps`` steps; eta = 0 is deterministic.

    x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z, with
    sigma = eta sqrt((1 - ab_prev) / (1 - ab)) sqrt(1 - ab / ab_prev)   (eq. 16).
    """
    ts = timesteps(d.T, steps)
    for k, i in enumerate(ts):
        x0, eps = _denoise_step(d, denoise, x, i, clip)
        ab = float(d.alpha_bar[i])
        ab_prev = float(d.alpha_bar[ts[k + 1]]) if k + 1 < len(ts) else 1.0
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5
        x = ab_prev**0.5 * x0 + max(1 - ab_prev - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * _noise(x, generator)
    return x


def dpmpp_2m(
    d: Diffusion, denoise: Denoise, x: torch.Tensor, clip: Clip, steps: int
) -> torch.Tensor:
    """DPM-Solver++(2M), multistep second order in data prediction (Lu et al. 2022, Alg. 2).

    With alpha = sqrt(ab), sigma = sqrt(1 - ab), lambda = log(alpha / sigma), h = lambda' - lambda:
        x' = (sigma' / sigma) x - alpha' (e^{-h} - 1) D,
        D = (1 + 1/(2r)) x0_k - 1/(2r) x0_{k-1}, r = h_prev / h  (D = x0_k on the first step).
    The final jump to clean data (sigma' = 0) gives x' = x0_hat, first order as in the paper.
    Steps are evenly spaced in lambda (``logsnr_timesteps``).
    """
    ts = logsnr_timesteps(d.alpha_bar, steps)
    x0_prev, h_prev = None, 0.0
    for k, i in enumerate(ts):
        x0, _ = _denoise_step(d, denoise, x, i, clip)
        if k + 1 == len(ts):
            return x0
        ab, ab_next = float(d.alpha_bar[i]), float(d.alpha_bar[ts[k + 1]])
        h = 0.5 * (math.log(ab_next / (1 - ab_next)) - math.log(ab / (1 - ab)))  # > 0
        D = x0
        if x0_prev is not None:
            r = h_prev / h
            D = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = ((1 - ab_next) / (1 - ab)) ** 0.5 * x - ab_next**0.5 * math.expm1(-h) * D
        x0_prev, h_prev = x0, h
    return x


@dataclass(frozen=True)
class Sampler:
    """How to draw images (a ``conf/sampler`` option), checked when it is built; calling it
    draws them.

    Args:
        method: "ddpm" (all T steps), "ddim" or "dpmpp2m".
        steps: model evaluations for ddim (evenly spaced in t) and dpmpp2m (in log-SNR), at
            most the diffusion's T; ddpm takes no step count (stored as None).
        eta: DDIM noise scale in [0, 1] (0 deterministic, 1 as noisy as DDPM); unused by the
            others.
        guidance: classifier-free guidance weight w >= 0 in ``(1 + w) eps_c - w eps_u``
            (``guided_eps``); libraries that write ``eps_u + s (eps_c - eps_u)`` use s = w + 1.
    """

    method: str = "ddim"
    steps: int | None = 50
    eta: float = 0.0
    guidance: float = 2.0

    def __post_init__(self) -> None:
        require(self.method in SAMPLERS, "method", self.method, f"one of {SAMPLERS}")
        if self.method == "ddpm":  # all T steps: equal settings compare equal
            object.__setattr__(self, "steps", None)
        require(self.method == "ddpm" or (is_int(self.steps) and self.steps >= 1), "steps",
                self.steps, f"an integer >= 1 for {self.method}")
        require(is_number(self.eta) and 0 <= self.eta <= 1, "eta", self.eta, "a number in [0, 1]")
        require(is_number(self.guidance) and self.guidance >= 0, "guidance", self.guidance,
                "a number >= 0")

    def check_steps(self, T: int) -> None:  # noqa: N803 -- the papers' symbol
        """ArgumentError unless the steps fit a process of T steps: the rule's T half, for
        callers that know T before drawing (the run, the commands); every call checks it."""
        if self.steps is not None and self.steps > T:
            raise ArgumentError("steps", self.steps, f"at most the diffusion's T={T} (the "
                                "sampler visits a subset of the T steps)")

    @torch.no_grad()
    def __call__(
        self,
        diffusion: Diffusion,
        model: Model,
        shape: Sequence[int],
        ids: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        clip_range: tuple[float, float] | None = (-1.0, 1.0),
        x_T: torch.Tensor | None = None,  # noqa: N803 -- the papers' symbol
    ) -> torch.Tensor:
        """Draw images from the reverse process.

        Args:
            diffusion: the process (any device; its scalars are read on the CPU).
            model: called as model(x_t, t, ids, drop); put in eval mode for the call and
                restored.
            shape: (B, C, H, W).
            ids: (B, 18) attribute ids, or None for an unconditional model / null condition.
            generator: seeds x_T and the sampler noise; same generator state, same images.
            device: where the model runs; default: the model's parameters' device.
            clip_range: (lo, hi) to clip each x0 prediction to the data range, None for no
                clipping.
            x_T: (B, C, H, W) starting noise instead of drawing it.
        Returns:
            (B, C, H, W) float32 samples in the data range.
        """
        self.check_steps(diffusion.T)
        if device is None:
            params = getattr(model, "parameters", None)
            device = next(params()).device if params is not None else torch.device("cpu")
        d = diffusion.to("cpu")
        B = shape[0]
        if ids is not None:
            ids = torch.as_tensor(ids, device=device).long()
            if ids.shape != (B, NUM_ATTRIBUTES):
                raise ValueError(f"sample: ids must have shape ({B}, {NUM_ATTRIBUTES}), got "
                                 f"{tuple(ids.shape)}")
        if x_T is None:
            rd = rng_device(generator, torch.device(device))
            x_T = torch.randn(tuple(shape), generator=generator, device=rd)
        elif tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"sample: x_T shape {tuple(x_T.shape)} != shape {tuple(shape)}")
        x = x_T.to(device=device, dtype=torch.float32)

        def clip(x0: torch.Tensor) -> torch.Tensor:
            return x0 if clip_range is None else x0.clamp(*clip_range)

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return guided_eps(model, x_t, t, ids, self.guidance)

        # Sampling is inference: dropout off. The only place that switches the mode.
        was_training = getattr(model, "training", False)
        if was_training:
            model.eval()
        try:
            if self.method == "ddpm":
                return ddpm(d, denoise, x, generator, clip)
            if self.method == "ddim":
                return ddim(d, denoise, x, generator, clip, self.steps, self.eta)
            return dpmpp_2m(d, denoise, x, clip, self.steps)
        finally:
            if was_training:
                model.train()
