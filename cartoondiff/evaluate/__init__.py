"""Evaluation: the judge (an attribute classifier), faithfulness, Fréchet distance, diversity.

``python -m cartoondiff.evaluate checkpoint=PATH ...`` is the command; the training loop
calls ``quick_evaluate`` and keeps the best checkpoint with ``BestTracker``. See
docs/evaluation.md for the definitions.
"""

from cartoondiff.evaluate.evaluator import (
    BestTracker,
    higher_is_better,
    metric_names,
    quick_evaluate,
    wandb_name,
)

__all__ = ["BestTracker", "higher_is_better", "metric_names", "quick_evaluate", "wandb_name"]
