"""Evaluation: the judge (an attribute classifier), faithfulness, Fréchet distance, diversity.

``python -m cartoondiff.evaluate checkpoint=PATH ...`` is the command; the training loop
calls ``quick_evaluate`` and keeps the best checkpoint with ``BestTracker``. See
docs/evaluation.md for the definitions.
"""

from cartoondiff.evaluate.evaluator import (
    BestTracker,
    evaluate_generator,
    higher_is_better,
    metric_names,
    model_generator,
    quick_evaluate,
    reference_set,
)
from cartoondiff.evaluate.judge import (
    AttributeClassifier,
    TrainedClassifier,
    load_classifier,
    load_or_train_classifier,
    train_classifier,
)
from cartoondiff.evaluate.metrics import frechet_distance

__all__ = [
    "AttributeClassifier",
    "BestTracker",
    "TrainedClassifier",
    "evaluate_generator",
    "frechet_distance",
    "higher_is_better",
    "load_classifier",
    "load_or_train_classifier",
    "metric_names",
    "model_generator",
    "quick_evaluate",
    "reference_set",
    "train_classifier",
]
