"""Fréchet distance, diversity, faithfulness and coverage against known answers."""

from __future__ import annotations

import math

import pytest
import torch

from cartoondiff.attributes import COUNTS, NAMES
from cartoondiff.evaluate import metrics as M
from cartoondiff.evaluate.evaluator import BestTracker, EvaluationError, higher_is_better


def random_spd(d: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def direct_frechet(mu1, s1, mu2, s2) -> float:
    """The printed formula, computed another way: eigenvalues of the non-symmetric S1 S2."""
    eig = torch.linalg.eigvals(s1 @ s2)  # real and >= 0 in exact arithmetic
    cross = eig.sqrt().real.sum()
    return float((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * cross)


def test_frechet_diagonal_closed_form():
    a = torch.tensor([1.0, 4.0, 9.0, 0.25], dtype=torch.float64)
    b = torch.tensor([4.0, 1.0, 9.0, 1.0], dtype=torch.float64)
    mu1, mu2 = torch.zeros(4), torch.tensor([1.0, 0.0, -2.0, 0.5])
    expected = 1 + 4 + 0.25 + ((a.sqrt() - b.sqrt()) ** 2).sum().item()
    assert M.frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected)


def test_frechet_2x2_non_commuting_closed_form():
    # For 2x2 PSD A: Tr sqrt(A) = sqrt(tr A + 2 sqrt(det A)); here A = S1 S2.
    s1 = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    s2 = torch.tensor([[1.0, -0.3], [-0.3, 3.0]], dtype=torch.float64)
    assert not torch.allclose(s1 @ s2, s2 @ s1)
    cross = math.sqrt((s1 @ s2).trace() + 2 * math.sqrt(s1.det() * s2.det()))
    expected = s1.trace() + s2.trace() - 2 * cross
    zero = torch.zeros(2)
    assert M.frechet_distance(zero, s1, zero, s2) == pytest.approx(float(expected), rel=1e-10)


def test_frechet_matches_direct_computation_in_64_dims():
    g = torch.Generator().manual_seed(0)
    s1, s2 = random_spd(64, g), random_spd(64, g)
    mu1, mu2 = torch.randn(64, generator=g), torch.randn(64, generator=g)
    ours = M.frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(direct_frechet(mu1.double(), s1, mu2.double(), s2), rel=1e-8)


def test_frechet_of_samples_estimates_the_gaussians_distance():
    g = torch.Generator().manual_seed(1)
    s1, s2 = random_spd(4, g), random_spd(4, g)
    mu1, mu2 = torch.zeros(4, dtype=torch.float64), torch.full((4,), 0.5, dtype=torch.float64)
    x = mu1 + torch.randn(40_000, 4, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s1).T
    y = mu2 + torch.randn(40_000, 4, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s2).T
    truth = M.frechet_distance(mu1, s1, mu2, s2)
    assert M.frechet_from_features(x, y) == pytest.approx(truth, rel=0.05)


def test_frechet_self_is_zero_and_grows_with_a_known_shift():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(500, 32, generator=g) @ torch.randn(32, 32, generator=g)
    assert M.frechet_from_features(x, x) < 1e-6 * M.feature_stats(x)[1].trace().item()
    direction = torch.randn(32, generator=g)
    direction /= direction.norm()
    shifts = [0.5, 1.0, 2.0, 4.0]
    d = [M.frechet_from_features(x, x + s * direction) for s in shifts]
    # a pure translation changes only the mean term: d = |shift|^2
    assert d == pytest.approx([s**2 for s in shifts], rel=1e-6)


def test_frechet_refuses_mismatched_shapes():
    with pytest.raises(M.MetricError, match="shapes disagree"):
        M.frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))
    with pytest.raises(M.MetricError, match="N >= 2"):
        M.feature_stats(torch.zeros(1, 5))


def test_diversity_of_identical_samples_is_zero():
    images = torch.randint(0, 256, (1, 1, 3, 8, 8), dtype=torch.uint8).expand(3, 4, 3, 8, 8)
    within, across = M.diversity(M.pixel_vectors(images))
    assert within == 0.0 and across == 0.0
    # different per condition, identical within: within 0, across > 0
    per_condition = torch.randint(0, 256, (3, 1, 3, 8, 8), dtype=torch.uint8).expand(3, 4, 3, 8, 8)
    within, across = M.diversity(M.pixel_vectors(per_condition))
    assert within == 0.0 and across > 0.1


def test_diversity_ignoring_the_condition_gives_within_near_across():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 16, 50, generator=g)  # every sample from the same distribution
    within, across = M.diversity(x)
    assert within == pytest.approx(across, rel=0.05)
    assert within == pytest.approx(math.sqrt(2 * 50), rel=0.05)  # E|x - y| for N(0, I_50)


def test_pixel_distance_is_rms_in_unit_range():
    black = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    white = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    assert M.mean_pairwise_distance(M.pixel_vectors(torch.cat([black, white]))) == pytest.approx(1)


def test_faithfulness_accuracy_relative_and_chance():
    target = torch.zeros(10, 18, dtype=torch.long)
    pred = target.clone()
    pred[:5, NAMES.index("hair_color")] = 1  # half wrong
    ceiling = dict.fromkeys(NAMES, 0.5)
    ceiling["eye_lashes"] = 0.5  # 2 values: a ceiling at chance, so no ratio
    out = M.faithfulness(pred, target, ceiling)
    assert out["accuracy"]["hair_color"] == 0.5 and out["accuracy"]["face_color"] == 1.0
    assert out["relative"]["hair_color"] == 1.0 and out["relative"]["face_color"] == 2.0
    assert "eye_lashes" not in out["relative"] and "eye_lid" not in out["relative"]
    assert out["accuracy"]["mean"] == pytest.approx((17 + 0.5) / 18)
    assert out["relative"]["mean"] == pytest.approx((14 * 2 + 1) / 15)  # 3 binary ones out
    assert math.isnan(M.faithfulness(pred, target, M.chance_accuracy())["relative"]["mean"])
    assert M.chance_accuracy()["hair"] == pytest.approx(1 / 111)
    with pytest.raises(M.MetricError):
        M.faithfulness(pred[:, :5], target, ceiling)


def test_coverage_one_for_uniform_zero_for_constant():
    uniform = torch.stack([torch.arange(2 * 3 * 5 * 7 * 11 * 4) % c for c in COUNTS], dim=1)
    constant = torch.zeros(100, 18, dtype=torch.long)
    cov = M.coverage(uniform)
    assert cov["hair_color"] == pytest.approx(1.0) and cov["glasses"] == pytest.approx(1.0)
    assert M.coverage(constant)["mean"] == 0.0


def test_best_tracker_direction_and_resume():
    assert higher_is_better("eval/faithfulness_mean")
    assert not higher_is_better("eval/frechet_classifier") and not higher_is_better("train/loss")
    best = BestTracker("eval/frechet_classifier")
    assert best.update({"eval/frechet_classifier": 5.0}, 1)
    assert not best.update({"eval/frechet_classifier": 6.0}, 2)
    assert best.update({"eval/frechet_classifier": 4.0}, 3) and best.step == 3
    assert not best.update({"eval/frechet_classifier": float("nan")}, 4)
    again = BestTracker("eval/frechet_classifier")
    again.load_state_dict(best.state_dict())
    assert not again.update({"eval/frechet_classifier": 4.5}, 5)
    with pytest.raises(EvaluationError, match="not among"):
        again.update({"eval/other": 1.0}, 6)
