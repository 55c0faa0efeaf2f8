"""One evaluation pass: generate for known attributes, judge, compare with real avatars.

``evaluate_generator`` works on any ``generate(ids, seed) -> uint8 images`` function, so the
same code scores a diffusion model, real images fed back for their own labels (the
"perfect generator" of the tests) or a generator that ignores its condition.
``quick_evaluate`` is the cheap version the training loop calls every few epochs;
``BestTracker`` decides when that is the best checkpoint so far.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cartoondiff import attributes
from cartoondiff.data.dataset import AvatarData
from cartoondiff.data.module import AvatarDataModule
from cartoondiff.diffusion import Diffusion, Sampler
from cartoondiff.evaluate import metrics as M
from cartoondiff.evaluate.inception import InceptionFeatures
from cartoondiff.evaluate.judge import TrainedClassifier, data_identity
from cartoondiff.inference import generate
from cartoondiff.runs.errors import UserError

log = logging.getLogger(__name__)

# ids (B, 18) long, seed -> uint8 images (B, 3, H, W)
Generate = Callable[[torch.Tensor, int], torch.Tensor]
LOWER_IS_BETTER = ("frechet", "fid", "loss")
CONDITIONS = ("heldout", "random")


class EvaluationError(UserError, ValueError):
    """Settings an evaluation cannot run with; the message names the setting."""


@dataclass
class Reference:
    """Real avatars and the conditions to generate for, judged once per evaluation.

    images: uint8 (M, 3, H, W) real avatars (the classifier's held-out rows when possible);
    ids: (M, 18) conditions: those avatars' labels ("heldout") or random ones ("random");
    features: (M, D) classifier features of ``images``; pred: (M, 18) classifier ids of
    ``images``; inception: (M, 2048) or None.
    """

    images: torch.Tensor
    ids: torch.Tensor
    features: torch.Tensor
    pred: torch.Tensor
    inception: torch.Tensor | None = None


def reference_set(
    data: AvatarData,
    classifier: TrainedClassifier,
    n: int,
    seed: int = 0,
    conditions: str = "heldout",
    inception: InceptionFeatures | None = None,
) -> Reference:
    """Pick n real avatars (seeded) and the n conditions to generate for.

    The rows come from the classifier's held-out set when it was trained on ``data`` (its
    accuracy there is the ceiling, and it never saw them), otherwise from all of ``data``.
    conditions="heldout" asks for those avatars' own attributes (needs labels);
    "random" draws ids uniformly, as an attribute-uniform dataset like Cartoon Set would.
    """
    if conditions not in CONDITIONS:
        raise EvaluationError(f"conditions={conditions!r} is not one of {CONDITIONS}")
    if n < 2:
        raise EvaluationError(f"n={n}: need at least 2 samples for a covariance")
    if data.images.shape[-1] != classifier.net.image_size:
        raise EvaluationError(f"data are {data.images.shape[-1]} px but the classifier was "
                              f"trained at {classifier.net.image_size} px")
    g = torch.Generator().manual_seed(seed)
    same = classifier.data_key == data_identity(data)
    pool = classifier.heldout if same else torch.arange(len(data))
    if not same:
        log.warning("classifier was trained on %s, not on these data; drawing references from "
                    "all %d rows", classifier.data_key, len(data))
    if n > len(pool):
        log.warning("n=%d but only %d reference avatars; using %d", n, len(pool), len(pool))
    rows = pool[torch.randperm(len(pool), generator=g)[:n]].sort().values
    images = data.images[rows]  # (M, 3, H, W) uint8
    if conditions == "heldout":
        if data.ids is None:
            raise EvaluationError("conditions=heldout needs labeled data; use conditions=random")
        ids = data.ids[rows].long()
    else:
        ids = attributes.random_ids(len(rows), generator=g)
    net = classifier.net
    return Reference(images, ids, net.embed(images), net.predict(images),
                     inception.embed(images) if inception is not None else None)


def evaluate_generator(
    generate: Generate,
    classifier: TrainedClassifier,
    reference: Reference,
    seed: int = 0,
    diversity_groups: int = 8,
    diversity_per_group: int = 4,
    inception: InceptionFeatures | None = None,
) -> dict[str, float]:
    """Score ``generate`` against ``reference``; flat metrics, described in docs/evaluation.md.

    Draws one image per reference condition (faithfulness, Fréchet distance, coverage) and
    ``diversity_per_group`` images for each of the first ``diversity_groups`` conditions
    (diversity), with seeds ``seed`` and ``seed + 1``.
    """
    G, K = min(diversity_groups, len(reference.ids)), diversity_per_group
    if G < 1 or K < 1:
        raise EvaluationError(f"diversity needs groups >= 1 and per_group >= 1, got {G}, {K}")
    net = classifier.net
    images = generate(reference.ids, seed)  # (M, 3, H, W) uint8
    if images.shape != reference.images.shape or images.dtype != torch.uint8:
        raise EvaluationError(f"generate returned {images.dtype} {tuple(images.shape)}, "
                              f"expected uint8 {tuple(reference.images.shape)}")
    pred = net.predict(images)
    feats = net.embed(images)
    faith = M.faithfulness(pred, reference.ids, classifier.accuracy)
    out: dict[str, float] = {
        "faithfulness_mean": faith["accuracy"]["mean"],
        "faithfulness_relative": faith["relative"]["mean"],
        **{name: faith["accuracy"][name] for name in attributes.NAMES},
        "frechet_classifier": M.frechet_from_features(feats, reference.features),
    }
    if inception is not None and reference.inception is not None:
        out["fid_inception"] = M.frechet_from_features(inception.embed(images),
                                                       reference.inception)

    div_ids = reference.ids[:G].repeat_interleave(K, dim=0)  # (G*K, 18)
    div_images = generate(div_ids, seed + 1)  # (G*K, 3, H, W)
    H, W = div_images.shape[-2:]
    pix = M.pixel_vectors(div_images.reshape(G, K, 3, H, W))  # (G, K, 3HW)
    out["diversity_within"], out["diversity_across"] = M.diversity(pix)
    out["diversity_real"] = M.mean_pairwise_distance(M.pixel_vectors(reference.images))
    div_feats = net.embed(div_images).reshape(G, K, -1)  # (G, K, D)
    out["diversity_within_features"], out["diversity_across_features"] = M.diversity(div_feats)
    out["diversity_real_features"] = M.mean_pairwise_distance(reference.features)
    out["coverage"] = M.coverage(pred)["mean"]
    out["coverage_real"] = M.coverage(reference.pred)["mean"]
    return out


def model_generator(
    model: nn.Module,
    diffusion: Diffusion,
    sampler: Sampler,
    image_size: int,
    normalize: str,
    device: torch.device | str,
    batch_size: int = 256,
) -> Generate:
    """A diffusion model as ``generate(ids, seed) -> uint8 images`` (``inference.generate``)."""
    return lambda ids, seed: generate(model, diffusion, ids, sampler, image_size=image_size,
                                      normalize=normalize, seed=seed, device=device,
                                      batch_size=batch_size)


def quick_evaluate(
    model: nn.Module,
    diffusion: Diffusion,
    sampler: Sampler,
    data_module: AvatarDataModule,
    classifier: TrainedClassifier,
    n: int = 64,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """A cheap evaluation for the training loop: metrics under "eval/..." keys.

    Samples n images for n held-out conditions plus 4 x 4 for diversity with ``sampler``
    (the run's), using ``model`` as given (pass the EMA model). The same seed every call,
    so epochs differ only by the weights. Leaves the global RNG untouched.
    """
    data = data_module.setup().data
    assert data is not None
    conditions = "heldout" if data.ids is not None else "random"
    ref = reference_set(data, classifier, n, seed, conditions)
    generate_for = model_generator(model, diffusion, sampler, data_module.image_size,
                                   data_module.normalize, device)
    out = evaluate_generator(generate_for, classifier, ref, seed, diversity_groups=4,
                             diversity_per_group=4)
    return {f"eval/{k}": v for k, v in out.items()}


def metric_names(prefix: str = "") -> list[str]:
    """Every metric ``evaluate_generator`` returns (``fid_inception`` only with weights)."""
    names = ["faithfulness_mean", "faithfulness_relative", *attributes.NAMES,
             "frechet_classifier", "fid_inception", "diversity_within", "diversity_across",
             "diversity_real", "diversity_within_features", "diversity_across_features",
             "diversity_real_features", "coverage", "coverage_real"]
    return [prefix + n for n in names]


ATTR_SECTION = "eval/attr/"  # W&B section of the per-attribute accuracies


def wandb_name(key: str) -> str:
    """A logged key's name in W&B: ``eval/glasses`` -> ``eval/attr/glasses`` (the 18
    accuracies get their own dashboard section), any other key as it is."""
    prefix, _, name = key.partition("/")
    if prefix == "eval" and name in attributes.NAMES:
        return ATTR_SECTION + name
    return key


def higher_is_better(metric: str) -> bool:
    """Direction of a metric: Fréchet distances and losses go down, the rest go up."""
    return not any(word in metric for word in LOWER_IS_BETTER)


class BestTracker:
    """Remembers the best value of one metric; ``update`` says when a new best arrives.

    Keep the ``best`` checkpoint when ``update`` returns True. ``state_dict`` goes into the
    training checkpoint so a resumed run keeps comparing against the right best.
    """

    def __init__(self, metric: str = "eval/faithfulness_mean") -> None:
        self.metric = metric
        self.higher = higher_is_better(metric)
        self.best: float | None = None
        self.step: int | None = None

    def update(self, values: Mapping[str, float], step: int) -> bool:
        if self.metric not in values:
            raise EvaluationError(f"best-checkpoint metric {self.metric!r} is not among the "
                                  f"evaluation's metrics: {sorted(values)}")
        value = float(values[self.metric])
        if value != value:  # NaN is never best
            return False
        if self.best is None or (value > self.best if self.higher else value < self.best):
            self.best, self.step = value, step
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "best": self.best, "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("metric") == self.metric:  # a changed metric starts afresh
            self.best, self.step = state.get("best"), state.get("step")
