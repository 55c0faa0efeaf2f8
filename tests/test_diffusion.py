"""The diffusion process: schedules, forward process, loss, samplers and guidance (CPU)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from cartoondiff import attributes
from cartoondiff.diffusion import (
    Diffusion,
    Sampler,
    cosine_betas,
    guided_eps,
    linear_betas,
    logsnr_timesteps,
    timesteps,
)
from cartoondiff.inference.grids import forward_process_image
from tests.conftest import build_denoiser

SAMPLER_ARGS = [
    ("ddpm", {}),
    ("ddim", {"steps": 10, "eta": 0.0}),
    ("ddim", {"steps": 10, "eta": 1.0}),
    ("dpmpp2m", {"steps": 10}),
]


def _diffusion100(prediction: str = "eps") -> Diffusion:
    """DDPM's linear schedule rescaled to T = 100 (the same beta_t * T as at T = 1000)."""
    return Diffusion(linear_betas(100, 1e-3, 0.2), prediction)


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


# --- schedules --------------------------------------------------------------------------------


def test_linear_betas_endpoints_and_monotone():
    betas = linear_betas(1000, 1e-4, 0.02)
    assert betas.shape == (1000,) and betas.dtype == torch.float64
    assert betas[0].item() == 1e-4 and betas[-1].item() == 0.02
    assert (betas.diff() > 0).all()


@pytest.mark.parametrize("betas", [linear_betas(1000), cosine_betas(1000), linear_betas(7)])
def test_alpha_bar_strictly_decreasing_in_unit_interval(betas):
    ab = Diffusion(betas).alpha_bar
    assert ((ab > 0) & (ab < 1)).all()
    assert (ab.diff() < 0).all()


def test_cosine_matches_closed_form():
    T, s = 1000, 0.008
    betas = cosine_betas(T, s)
    t = torch.arange(1, T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    clipped = betas >= 0.999
    assert clipped.sum() == 1 and clipped[-1]  # only the singular last step is clipped
    ab = torch.cumprod(1 - betas, 0)
    torch.testing.assert_close(ab[:-1], (f / f0)[:-1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: linear_betas(0), r"^T=0 is invalid: expected an integer >= 1"),
        (lambda: cosine_betas(0), r"^T=0 is invalid"),
        (lambda: linear_betas(10, 0.02, 1e-4), r"^beta_end=0.0001 .*\[beta_start=0.02, 1\)"),
        (lambda: linear_betas(10, 0.0, 0.02), r"^beta_start=0.0 is invalid"),
        (lambda: linear_betas(10, 1e-4, 1.0), r"^beta_end=1.0 is invalid"),
        (lambda: Diffusion(torch.tensor([0.1, 1.2])), "betas must lie in"),
        (lambda: Diffusion(linear_betas(10), "x0"), r"^prediction='x0' is invalid"),
        (lambda: Diffusion(linear_betas(10), p_uncond=1.0), r"^p_uncond=1.0 is invalid"),
    ],
)
def test_schedule_validation(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- forward process and loss -----------------------------------------------------------------


def test_diffusion_is_immutable_and_moves_by_copy():
    d = _diffusion100()
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.prediction = "v"
    moved = d.to("cpu")
    assert moved is not d and torch.equal(moved.alpha_bar, d.alpha_bar)
    torch.testing.assert_close(d.alpha_bar, torch.cumprod(1 - d.betas, 0))
    assert d.posterior_variance[0] == 0  # beta_tilde_0: nothing left to add at the end


def test_q_sample_mean_and_variance():
    d = Diffusion(linear_betas(1000))
    n = 200_000
    x0 = torch.tensor([-0.8, 0.5]).view(1, 2, 1, 1).expand(n, 2, 1, 1)
    for step in (0, 250, 999):
        t = torch.full((n,), step)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(step))
        x_t = d.q_sample(x0, t, noise)
        ab = d.alpha_bar[step].item()
        mean, var = x_t.mean(0).flatten(), x_t.var(0).flatten()
        torch.testing.assert_close(mean, math.sqrt(ab) * x0[0].flatten(), atol=0.01, rtol=0)
        torch.testing.assert_close(var, torch.full((2,), 1 - ab), atol=0.01, rtol=0.02)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_predict_x0_eps_inverts_the_targets(prediction):
    d = _diffusion100(prediction)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 50, 99])
    x_t = d.q_sample(x0, t, noise)
    out = noise if prediction == "eps" else d.v_target(x0, t, noise)
    x0_hat, eps_hat = d.predict_x0_eps(out, x_t, t)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(eps_hat, noise, rtol=1e-4, atol=1e-4)


def test_loss_drops_conditions_at_rate_and_is_seeded():
    d = _diffusion100()
    seen = {}

    def model(x_t, t, ids, drop):
        seen.update(t=t, ids=ids, drop=drop)
        return torch.zeros_like(x_t)

    x0 = torch.zeros(4000, 3, 2, 2)
    ids = attributes.random_ids(4000, torch.Generator().manual_seed(0))
    d = dataclasses.replace(d, p_uncond=0.25)
    loss = d.loss(model, x0, ids, generator=torch.Generator().manual_seed(1))
    assert abs(seen["drop"].float().mean().item() - 0.25) < 0.03
    assert seen["ids"] is ids and seen["t"].min() >= 0 and seen["t"].max() < d.T
    assert abs(loss.item() - 1.0) < 0.02  # zero prediction: E[eps^2] = 1
    again = d.loss(model, x0, ids, generator=torch.Generator().manual_seed(1))
    assert again.item() == loss.item()
    dataclasses.replace(d, p_uncond=0.0).loss(model, x0, ids)
    assert seen["drop"] is None
    with pytest.raises(ValueError, match="p_uncond=1.5"):
        dataclasses.replace(d, p_uncond=1.5)


def test_forward_process_image_drowns_each_row_in_its_own_noise():
    d = _diffusion100()
    images = (torch.rand(2, 3, 16, 16) * 255).to(torch.uint8)
    picture, ts = forward_process_image(d, images, "pm1", n_steps=3)
    assert ts == [0, 50, 99]
    grid = torch.from_numpy(np.array(picture)).permute(2, 0, 1).float()  # (3, H', W')
    assert grid.shape == (3, 2 * 18 + 2, 3 * 18 + 2)  # make_grid: 2 px padding
    first = grid[:, 2:18, 2:18]  # image 0 at t = 0: barely noised
    assert (first - images[0].float()).abs().mean() < 0.1 * 255
    last = grid[:, 2:18, 2 + 2 * 18 : 18 + 2 * 18]  # image 0 at t = T-1: mostly noise
    assert (last - images[0].float()).abs().mean() > 0.25 * 255


# --- samplers and guidance --------------------------------------------------------------------


def test_timesteps_cover_both_ends():
    assert timesteps(100, 1) == [99]
    assert timesteps(100, 5) == [99, 74, 50, 25, 0]
    assert timesteps(10, 10) == list(range(9, -1, -1))


def _point_oracle(d: Diffusion, target: torch.Tensor):
    """The exact eps when the data is the single image ``target``."""

    def model(x_t, t, ids, drop):
        a = d.at(d.sqrt_alpha_bar, t, x_t)
        s = d.at(d.sqrt_one_minus_alpha_bar, t, x_t)
        return (x_t - a * target) / s

    return model


@pytest.mark.parametrize(("sampler", "kwargs"), SAMPLER_ARGS)
def test_samplers_recover_a_single_data_point(sampler, kwargs):
    d = _diffusion100()
    target = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) - 0.5
    g = torch.Generator().manual_seed(1)
    draw = Sampler(sampler, guidance=0.0, **kwargs)
    out = draw(d, _point_oracle(d, target), target.shape, None, generator=g)
    torch.testing.assert_close(out, target, rtol=0, atol=1e-4)


MU, SD = 0.3, 0.5


def _gaussian_oracle(d: Diffusion):
    """Exact eps for data x0 ~ N(MU, SD^2) per pixel: E[x0 | x_t] is linear in x_t."""

    def model(x_t, t, ids, drop):
        a = d.at(d.sqrt_alpha_bar, t, x_t)
        s = d.at(d.sqrt_one_minus_alpha_bar, t, x_t)
        x0 = MU + a * SD**2 / (a**2 * SD**2 + s**2) * (x_t - a * MU)
        return (x_t - a * x0) / s

    return model


def _ode_solution(d: Diffusion, x_T: torch.Tensor) -> torch.Tensor:  # noqa: N803
    """The probability-flow ODE keeps (x_t - a_t MU) / sqrt(a_t^2 SD^2 + s_t^2) fixed."""
    ab = float(d.alpha_bar[-1])
    return MU + SD * (x_T - ab**0.5 * MU) / (ab * SD**2 + 1 - ab) ** 0.5


@pytest.mark.parametrize(("sampler", "kwargs"), [("ddpm", {}), ("ddim", {"eta": 1.0})])
def test_stochastic_samplers_reproduce_a_gaussian(sampler, kwargs):
    d = Diffusion(linear_betas(1000))
    g = torch.Generator().manual_seed(2)
    draw = Sampler(sampler, steps=1000, guidance=0.0, **kwargs)
    out = draw(d, _gaussian_oracle(d), (16, 3, 16, 16), None, generator=g, clip_range=None)
    assert abs(out.mean().item() - MU) < 0.02
    assert abs(out.std().item() / SD - 1) < 0.03


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 200), ("dpmpp2m", 25)])
def test_deterministic_samplers_follow_the_ode(sampler, steps):
    d = Diffusion(linear_betas(1000))
    x_T = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    draw = Sampler(sampler, steps, guidance=0.0)
    out = draw(d, _gaussian_oracle(d), x_T.shape, None, x_T=x_T, clip_range=None)
    assert (out - _ode_solution(d, x_T)).abs().max() < 0.05


def test_solver_orders():
    """Doubling the steps halves DDIM's error (first order) and quarters DPM-Solver++(2M)'s."""
    d = Diffusion(linear_betas(1000))
    x_T = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    exact = _ode_solution(d, x_T)

    def error(sampler, steps):
        draw = Sampler(sampler, steps, guidance=0.0)
        out = draw(d, _gaussian_oracle(d), x_T.shape, None, x_T=x_T, clip_range=None)
        return (out - exact).abs().max().item()

    ddim_ratio = error("ddim", 100) / error("ddim", 50)
    dpm_ratio = error("dpmpp2m", 100) / error("dpmpp2m", 50)
    assert 0.4 < ddim_ratio < 0.6, ddim_ratio
    assert dpm_ratio < 0.3, dpm_ratio


def test_logsnr_timesteps():
    for betas in (linear_betas(1000), cosine_betas(1000), cosine_betas(20)):
        ab = Diffusion(betas).alpha_bar
        for steps in (2, 7, len(betas)):
            ts = logsnr_timesteps(ab, steps)
            assert len(set(ts)) == steps and ts[0] == len(betas) - 1 and ts[-1] == 0
            assert ts == sorted(ts, reverse=True)
    ab = Diffusion(linear_betas(1000)).alpha_bar
    lam = (0.5 * torch.log(ab / (1 - ab)))[logsnr_timesteps(ab, 10)]
    gaps = lam.diff()
    assert gaps.max() / gaps.min() < 1.2  # evenly spaced in log-SNR


@pytest.mark.parametrize(("sampler", "kwargs"), SAMPLER_ARGS)
def test_samplers_deterministic_for_a_seed(sampler, kwargs):
    d = Diffusion(cosine_betas(20))
    model = build_denoiser("tiny")
    _randomize(model)
    ids = attributes.random_ids(2, torch.Generator().manual_seed(0))
    kwargs = {**kwargs, "steps": min(kwargs.get("steps", 20), 5)}

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return Sampler(sampler, guidance=2.0, **kwargs)(d, model, (2, 3, 16, 16), ids, generator=g)

    a, b = draw(0), draw(0)
    assert torch.equal(a, b)
    assert a.shape == (2, 3, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, draw(1))
    assert model.training  # the call restored train mode


def test_ddim_eta0_deterministic_given_x_T():  # noqa: N802 -- the papers' x_T
    d = Diffusion(cosine_betas(20))
    model = build_denoiser("tiny")
    _randomize(model)
    ids = attributes.random_ids(2, torch.Generator().manual_seed(0))
    x_T = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    draw = Sampler("ddim", steps=5, eta=0.0, guidance=0.0)
    outs = [
        draw(d, model, x_T.shape, ids, x_T=x_T, generator=torch.Generator().manual_seed(seed))
        for seed in (0, 1)
    ]
    assert torch.equal(outs[0], outs[1])


def test_guidance_formula_and_zero_weight():
    model = build_denoiser("tiny").eval()
    _randomize(model)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(3, 3, 16, 16, generator=g), torch.tensor([1, 40, 90])
    ids = attributes.random_ids(3, g)
    with torch.no_grad():
        cond, uncond = model(x, t, ids), model(x, t, None)
        torch.testing.assert_close(guided_eps(model, x, t, ids, 0.0), cond)
        w = 2.0
        guided = guided_eps(model, x, t, ids, w)
        torch.testing.assert_close(guided, (1 + w) * cond - w * uncond, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(guided_eps(model, x, t, None, w), uncond)


def test_guidance_ignored_by_unconditional_model():
    model = build_denoiser("tiny", attention="none").eval()
    _randomize(model)
    calls = []
    model.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 50])
    with torch.no_grad():
        out = guided_eps(model, x, t, None, 3.0)
        torch.testing.assert_close(out, model(x, t))
    assert calls == [2, 2]  # one un-doubled pass each


def test_sampler_rejects_bad_arguments():
    d = Diffusion(cosine_betas(10))
    model = _point_oracle(d, torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="method='euler'"):
        Sampler("euler", guidance=0.0)(d, model, (1, 3, 4, 4))
    with pytest.raises(ValueError, match="steps=20"):
        Sampler("ddim", steps=20, guidance=0.0)(d, model, (1, 3, 4, 4))
    with pytest.raises(ValueError, match="ids must have shape"):
        Sampler(steps=5, guidance=0.0)(d, model, (1, 3, 4, 4), torch.zeros(2, 18, dtype=torch.long))


# --- learning ---------------------------------------------------------------------------------


def test_tiny_model_overfits_eight_images():
    """Eps loss on 8 fixed 16x16 images (with their ids) falls 10x in 300 Adam steps, T = 100."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    low = torch.rand(8, 3, 4, 4, generator=g) * 2 - 1  # smooth colour fields
    x0 = torch.nn.functional.interpolate(low, size=16, mode="bilinear", align_corners=False)
    ids = attributes.random_ids(8, g)
    d = _diffusion100()
    dropping = dataclasses.replace(d, p_uncond=0.1)  # trains the null branch too, as runs do
    model = build_denoiser("tiny")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def held_out_loss() -> float:  # the same t and eps every time, 4 draws per image
        ge = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return d.loss(model, x0.repeat(4, 1, 1, 1), ids.repeat(4, 1), ge).item()

    before = held_out_loss()
    for _ in range(300):
        loss = dropping.loss(model, x0, ids, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    assert before > 0.9 and after < before / 10, (before, after)


def test_tiny_model_learns_to_use_the_condition():
    """At t = T-1 the v target is about -x0 and x_t holds almost nothing of x0: only the ids
    tell the 8 flat-colour images apart, so the loss can only fall through Tau and attention."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(8, 3, 1, 1, generator=g) * 2 - 1).expand(8, 3, 16, 16).contiguous()
    ids = attributes.random_ids(8, g)
    d = _diffusion100("v")
    model = build_denoiser("tiny")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    t_last = torch.full((8,), d.T - 1)
    for _ in range(100):
        loss = d.loss(model, x0, ids, generator=g, t=t_last)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        right = d.loss(model, x0, ids, torch.Generator().manual_seed(9), t_last).item()
        wrong = d.loss(model, x0, ids.roll(1, 0), torch.Generator().manual_seed(9), t_last)
    assert right < 0.05 and right < wrong.item() / 10, (right, wrong.item())
