"""Training: the loop, EMA, checkpoints, and reproducible batches."""

from cartoondiff.train.loop import train

__all__ = ["train"]
