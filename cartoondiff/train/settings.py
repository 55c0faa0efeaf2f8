"""The ``trainer`` config group as one checked object: how long to train, what to log and keep.

Rules that belong to another class are checked there, not here: the device by
``devices.pick_device``, the strategy by ``distributed.setup``, the precision by
``devices.autocast_dtype``, ``ema_decay`` by ``EMA``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cartoondiff.inference.grids import MAX_GRID_IMAGES
from cartoondiff.runs.errors import SEED_RULE, is_int, is_number, is_seed, require


@dataclass(frozen=True)
class TrainerSettings:
    """What the training loop does besides the maths (the ``trainer`` node of conf/config.yaml)."""

    device: str = "auto"
    strategy: str = "single"
    precision: str = "auto"
    compile: bool = False
    max_steps: int | None = None
    max_epochs: float = 6
    grad_accum: int = 1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    max_bad_steps: int = 0
    log_every: int = 25
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    sample_every_epochs: int = 1
    sample_rows: int = 6
    sample_cols: int = 6
    sample_seed: int = 1234
    progress_bar: bool = True

    def __post_init__(self) -> None:
        def positive_int(name: str, minimum: int = 1, note: str = "") -> None:
            value = getattr(self, name)
            require(is_int(value) and value >= minimum, name, value,
                    f"an integer >= {minimum}{note}")

        require(isinstance(self.compile, bool), "compile", self.compile, "true or false")
        require(isinstance(self.progress_bar, bool), "progress_bar", self.progress_bar,
                "true or false")
        require(self.max_steps is None or (is_int(self.max_steps) and self.max_steps >= 1),
                "max_steps", self.max_steps, "null or an integer >= 1")
        require(is_number(self.max_epochs) and self.max_epochs > 0, "max_epochs",
                self.max_epochs, "a number > 0")
        require(is_number(self.grad_clip) and self.grad_clip > 0, "grad_clip", self.grad_clip,
                "a number > 0")
        for name in ("grad_accum", "log_every", "checkpoint_every", "sample_rows",
                     "sample_cols"):
            positive_int(name)
        grid = self.sample_rows * self.sample_cols  # drawn at the end of each epoch: bounded
        require(grid <= MAX_GRID_IMAGES, "sample_rows", self.sample_rows,
                f"sample_rows * sample_cols <= {MAX_GRID_IMAGES} (one grid; got {grid})")
        positive_int("max_bad_steps", 0)
        positive_int("keep_checkpoints", 0, " (0 keeps all)")
        positive_int("sample_every_epochs", 0, " (0 never samples during training)")
        require(is_seed(self.sample_seed), "sample_seed", self.sample_seed, SEED_RULE)
