"""The numbers: Fréchet distance, per-attribute faithfulness, diversity, attribute coverage.

Pure functions of tensors; nothing here knows about models or files.

Fréchet distance between Gaussians N(mu1, S1) and N(mu2, S2) fitted to two feature sets
(Dowson & Landau 1982; used as FID by Heusel et al. 2017):

    d^2 = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1^(1/2) S2 S1^(1/2))^(1/2))

The last term equals the usual Tr((S1 S2)^(1/2)) (docs/evaluation.md says why); the symmetric
form takes two eigen-decompositions in float64 (no scipy ``sqrtm``, no complex round-off to
discard), round-off negative eigenvalues clamped to 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from cartoondiff.attributes import COUNTS, NAMES


class MetricError(ValueError):
    """Inputs a metric cannot be computed from; the message says which and why."""


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, D) -> mean (D,) and unbiased covariance (D, D), both float64."""
    if features.dim() != 2 or features.shape[0] < 2:
        raise MetricError(f"feature_stats needs (N >= 2, D) features, got {tuple(features.shape)}")
    x = features.double()
    return x.mean(0), torch.cov(x.T)  # rows are variables to torch.cov


def frechet_distance(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    mu: (D,), sigma: (D, D) covariance. Computed in float64; see the module docstring.
    """
    mu1, mu2, s1, s2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (*mu1.shape, *mu1.shape):
        raise MetricError(f"frechet_distance: shapes disagree: mu {tuple(mu1.shape)}, "
                          f"{tuple(mu2.shape)}; sigma {tuple(s1.shape)}, {tuple(s2.shape)}")
    w, v = torch.linalg.eigh((s1 + s1.T) / 2)  # exact symmetry for eigh
    r1 = (v * w.clamp_min(0).sqrt()) @ v.T  # S1^(1/2)
    inner = r1 @ s2 @ r1  # S1^(1/2) S2 S1^(1/2), symmetric PSD
    cross = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
    d2 = (mu1 - mu2).square().sum() + torch.trace(s1) + torch.trace(s2) - 2 * cross
    return max(float(d2), 0.0)  # round-off can leave -1e-12 for identical sets


def frechet_from_features(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to features a (N, D) and b (M, D)."""
    return frechet_distance(*feature_stats(a), *feature_stats(b))


def chance_accuracy() -> dict[str, float]:
    """Accuracy of a guess that ignores the image, when attribute a is uniform: 1 / COUNTS[a]."""
    return {name: 1.0 / n for name, n in zip(NAMES, COUNTS)}


def attribute_accuracy(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Fraction of rows where pred == target, per attribute (counted in float64); pred,
    target (N, 18) ids. The judge's accuracy on its held-out avatars and faithfulness."""
    acc = (pred.long() == target.long()).double().mean(0)  # (18,)
    return {name: float(a) for name, a in zip(NAMES, acc)}


def relative_to_ceiling(
    accuracy: Mapping[str, float], ceiling: Mapping[str, float]
) -> dict[str, float]:
    """acc_a / ceiling_a for each attribute the classifier reads better than chance.

    An attribute whose ceiling is at or below chance (too small to see at this size, or a
    classifier trained too briefly) has no meaningful ratio and is left out.
    """
    chance = chance_accuracy()
    return {n: accuracy[n] / ceiling[n] for n in NAMES if ceiling[n] > chance[n]}


def faithfulness(
    pred: torch.Tensor, target: torch.Tensor, ceiling: Mapping[str, float]
) -> dict[str, dict[str, float]]:
    """How often the classifier reads back the attribute the generator was asked for.

    pred: classifier's ids for the generated images (N, 18); target: the requested ids
    (N, 18). Returns {"accuracy": {name: acc}, "relative": {name: acc / ceiling[name]}},
    each with a "mean" entry: accuracy's is the plain mean over the 18 attributes,
    relative's the mean ratio over the attributes in it (see ``relative_to_ceiling``;
    NaN if there are none). A relative score near 1 means "as readable as real avatars".
    """
    if pred.shape != target.shape or pred.dim() != 2 or pred.shape[1] != len(NAMES):
        raise MetricError(f"faithfulness: pred {tuple(pred.shape)} and target "
                          f"{tuple(target.shape)} must both be (N, 18)")
    accuracy = attribute_accuracy(pred, target)
    relative = relative_to_ceiling(accuracy, ceiling)
    accuracy["mean"] = sum(accuracy[n] for n in NAMES) / len(NAMES)
    relative["mean"] = sum(relative.values()) / len(relative) if relative else float("nan")
    return {"accuracy": accuracy, "relative": relative}


def _cdist(x: torch.Tensor) -> torch.Tensor:
    """All Euclidean distances between rows of x (N, D) -> (N, N), float64.

    Without the matrix-product shortcut, so identical rows are exactly 0 apart.
    """
    x = x.double()[None]
    return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")[0]


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """Mean Euclidean distance over all pairs i < j of rows of x (N, D); 0 for N < 2."""
    if x.shape[0] < 2:
        return 0.0
    n = x.shape[0]
    return float(_cdist(x).sum() / (n * (n - 1)))  # the zero diagonal adds nothing


def diversity(groups: torch.Tensor) -> tuple[float, float]:
    """Mean pairwise distances within and across conditions.

    groups: (G, K, D): K samples (rows) for each of G conditions, as flat vectors.
    within: mean over conditions of the mean distance between two samples of one condition;
    across: mean distance between two samples of different conditions. How to read them:
    docs/evaluation.md, "Diversity and coverage".
    """
    if groups.dim() != 3:
        raise MetricError(f"diversity expects (G, K, D) groups, got {tuple(groups.shape)}")
    G, K, _ = groups.shape
    x = groups.double()
    within = sum(mean_pairwise_distance(x[g]) for g in range(G)) / G if K > 1 else 0.0
    if G < 2:
        return within, float("nan")
    d = _cdist(x.reshape(G * K, -1))  # (GK, GK)
    same = torch.arange(G).repeat_interleave(K)
    other = same[:, None] != same[None, :]
    return within, float(d[other].mean())


def pixel_vectors(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (..., 3, H, W) -> float vectors (..., 3HW) scaled so that the distance
    between two images is their root-mean-square pixel difference in [0, 1] units.

    (RMS rather than the raw L2 norm, so the number does not grow with the image size.)
    """
    n = math.prod(images.shape[-3:])
    return images.flatten(-3).double() / 255.0 / math.sqrt(n)


def coverage(pred: torch.Tensor) -> dict[str, float]:
    """Normalised entropy of the predicted value of each attribute over a set of images.

    pred: (N, 18) predicted ids. H(p) / log(COUNTS[a]) with p the histogram of attribute a:
    1 when every value is equally common (as in the data), 0 when one value is always drawn
    (the blog's "always a man with a beard and grey hair"). "mean" averages the 18.
    Estimates from N samples are biased low for attributes with many values (hair: 111), so
    compare against the same number on real images of the same N.
    """
    out: dict[str, float] = {}
    for a, (name, k) in enumerate(zip(NAMES, COUNTS)):
        p = torch.bincount(pred[:, a].long(), minlength=k).double() / pred.shape[0]
        p = p[p > 0]
        out[name] = float(-(p * p.log()).sum() / math.log(k))
    out["mean"] = sum(out[n] for n in NAMES) / len(NAMES)
    return out
