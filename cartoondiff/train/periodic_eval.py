"""Evaluation during training: every N epochs, score the EMA model and keep the best one.

The blog's lesson "lower loss doesn't promise better image quality" is why the ``best``
export is chosen by an evaluation metric (attribute faithfulness by default), not by loss.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cartoondiff.data.cache import resolve_cache_dir
from cartoondiff.data.module import AvatarDataModule
from cartoondiff.diffusion import Diffusion, Sampler
from cartoondiff.evaluate import BestTracker, metric_names, quick_evaluate
from cartoondiff.evaluate.judge import (
    TRAIN_SETTINGS,
    AttributeClassifier,
    ClassifierError,
    load_or_train_classifier,
)
from cartoondiff.inference import checkpoint as ckpt
from cartoondiff.runs.errors import ArgumentError, is_int, require

log = logging.getLogger(__name__)


class PeriodicEvaluator:
    """Runs ``quick_evaluate`` every ``every_epochs`` epochs and after the last; writes
    ``best_path`` (EMA weights + config, like ``model_ema.pt``) whenever ``metric`` improves.

    The attribute classifier is trained (or loaded from ``cache_dir``) at the first
    evaluation, so runs that never evaluate never pay for it. It learns from labeled
    avatars: on data without labels the evaluation is switched off with a warning.
    """

    def __init__(
        self,
        diffusion: Diffusion,
        sampler: Sampler,
        device: torch.device,
        best_path: Path,
        every_epochs: int = 0,
        n: int = 64,
        metric: str = "eval/faithfulness_mean",
        cache_dir: str | Path | None = None,
        classifier: dict[str, Any] | None = None,
        image_size: int | None = None,
    ) -> None:
        """``image_size``: the run's (``data.image_size``); when evaluating, the judge must
        accept it, checked here so a run never trains for epochs to fail at its first
        evaluation. ``classifier``: the judge's training settings (``TRAIN_SETTINGS``)."""
        require(is_int(every_epochs) and every_epochs >= 0, "every_epochs", every_epochs,
                "an integer >= 0 (0: never)")
        require(is_int(n) and n >= 2, "n", n, "an integer >= 2")
        require(metric in metric_names("eval/"), "metric", metric,
                f"one of the evaluation's metrics, e.g. {', '.join(metric_names('eval/')[:3])}")
        settings = dict(classifier or {})
        unknown = sorted(set(settings) - set(TRAIN_SETTINGS))
        require(not unknown, "classifier", settings,
                f"settings of the judge's training, among {TRAIN_SETTINGS} (not {unknown})")
        if every_epochs and image_size is not None:
            try:
                with torch.device("meta"):  # its shape rules only: nothing is allocated
                    AttributeClassifier(image_size, **{k: settings[k] for k in
                                                       ("width", "feature_dim", "stem")
                                                       if k in settings})
            except ClassifierError as err:
                raise ArgumentError("image_size", image_size,
                                    f"a size the evaluation's judge accepts ({err}), or "
                                    "evaluate.every_epochs=0") from None
        self.diffusion, self.sampler = diffusion, sampler
        self.device, self.best_path = device, Path(best_path)
        self.every_epochs, self.n = every_epochs, n
        self.cache_dir = resolve_cache_dir(cache_dir)  # None: the user cache
        self.classifier_settings = settings
        self.best = BestTracker(metric)
        self.data: AvatarDataModule | None = None
        self._classifier = None

    def attach(self, data: AvatarDataModule) -> None:
        """The run's data, once loaded; without labels there is nothing to judge with."""
        self.data = data
        if self.every_epochs and data.ids is None:
            log.warning("evaluate.every_epochs=%d is ignored: the data has no attribute labels "
                        "to train the evaluation's classifier on", self.every_epochs)
            self.every_epochs = 0

    def due(self, epochs_done: int, last: bool = False) -> bool:
        """Every ``every_epochs`` epochs, and after the ``last`` epoch of the run: its final
        model is always scored (and can be the best) whatever the period."""
        return self.every_epochs > 0 and epochs_done > 0 and (
            last or epochs_done % self.every_epochs == 0)

    def evaluate(self, model: nn.Module, step: int, config: dict[str, Any]) -> dict[str, float]:
        """Evaluate ``model`` (the EMA weights); export it when it is the best so far."""
        assert self.data is not None, "attach(data) first"
        if self._classifier is None:
            self._classifier = load_or_train_classifier(
                self.data, self.cache_dir, device=self.device, **self.classifier_settings)
        scores = quick_evaluate(model, self.diffusion, self.sampler, self.data,
                                self._classifier, n=self.n, seed=0, device=self.device)
        if self.best.update(scores, step):
            ckpt.save_atomic({"model": model.state_dict(), "config": config, "step": step,
                              "metric": self.best.metric, "value": self.best.best},
                             self.best_path)
            log.info("new best %s = %.4f at step %d -> %s", self.best.metric, self.best.best,
                     step, self.best_path)
        best = self.best.best
        return {**scores, "eval/best": float("nan") if best is None else float(best)}

    def state_dict(self) -> dict[str, Any]:
        return self.best.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best.load_state_dict(state)
