"""Training: the loop (``loop``), the training's own random streams (``seeding``), batches
(``batches``), EMA, LR schedules (``lr``), the trainer settings, data-parallel training
(``distributed``), what a resume may continue (``resume``), the periodic evaluation
(``periodic_eval``) and the memory anatomy command
(``python -m cartoondiff.train.memory``)."""

from cartoondiff.train.loop import train

__all__ = ["train"]
