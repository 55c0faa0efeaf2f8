"""A training run's folder, its one owner: the layout, the lock, what to resume, the same-run rule.

Every command that writes or reads a run folder takes its file names from ``RunFolder``::

    RUN_DIR/
      .lock                   who writes it now (locked for the run's life)
      config.yaml             the resolved run config (its recipe included)
      metrics.jsonl           one JSON row per logged step (train/*, eval/*, resume/*)
      checkpoints/
        ckpt-step000000500.pt full training state, the newest keep_checkpoints of them
      samples/
        forward_process.png   q(x_t | x_0) before training (+ .txt: its columns' t)
        epoch000.png          the EMA model's grid after each epoch (0-based, as the blog)
        final.png             the grid at the end
      model_ema.pt            the EMA weights and config at the end (what sample/evaluate load)
      model_best.pt           the best EMA weights by evaluate.metric
      wandb_id.txt            the W&B run id a resume continues
      wandb/                  W&B's offline runs

The checkpoint store (``checkpoint_path``, ``list_checkpoints``, ``prune``) names, lists and
prunes ``checkpoints/``; loading them and the same-run rule of a resume are the training's
(``train.resume``), so this module reads no checkpoint and imports no science.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from cartoondiff.runs.cli import COMMAND_ENV
from cartoondiff.runs.errors import ConfigError, UserError
from cartoondiff.runs.files import ReadError, read_regular, try_lock, write_text_atomic

if TYPE_CHECKING:
    from filelock import FileLock

log = logging.getLogger(__name__)

# Keys (prefixes, ending at a key boundary) that never change a run's result: where and how
# it executes, logs and saves. Left out of run names (runs.naming) and free on resume.
RESULT_NEUTRAL = ("hydra", "logger", "resume", "resume_changes", "trainer.device",
                  "trainer.progress_bar", "trainer.log_every", "trainer.checkpoint_every",
                  "trainer.keep_checkpoints", "trainer.compile", "data.cache_dir", "data.on_error")


class RunFolder:
    """The paths of one run folder (the layout in this module's docstring)."""

    CONFIG, METRICS, LOCK, WANDB_ID = "config.yaml", "metrics.jsonl", ".lock", "wandb_id.txt"
    MODEL_EMA, MODEL_BEST = "model_ema.pt", "model_best.pt"

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @classmethod
    def of_checkpoint(cls, checkpoint: Path | str) -> RunFolder:
        """The run folder a checkpoint belongs to: its own folder (``model_ema.pt``), or the
        one above ``checkpoints/``."""
        folder = Path(checkpoint).expanduser().resolve().parent
        return cls(folder.parent if folder.name == "checkpoints" else folder)

    config = property(lambda self: self.root / self.CONFIG)
    metrics = property(lambda self: self.root / self.METRICS)
    lock = property(lambda self: self.root / self.LOCK)
    wandb_id = property(lambda self: self.root / self.WANDB_ID)
    wandb_dir = property(lambda self: self.root / "wandb")
    model_ema = property(lambda self: self.root / self.MODEL_EMA)
    model_best = property(lambda self: self.root / self.MODEL_BEST)
    checkpoints = property(lambda self: self.root / "checkpoints")
    samples = property(lambda self: self.root / "samples")

    def save_hydra_record(self, record: dict[str, str]) -> None:
        """``.hydra/NAME`` for each file of ``hydra_record`` (none outside run.py)."""
        for name, text in record.items():
            write_text_atomic(self.root / ".hydra" / name, text)

    def grid(self, name: str) -> Path:
        """``samples/NAME.png``: ``epoch{e:03d}``, ``final`` or ``forward_process``."""
        return self.samples / f"{name}.png"

    @staticmethod
    def epoch_grid_name(epoch: int) -> str:
        return f"epoch{epoch:03d}"

    def epoch_grids(self) -> dict[int, Path]:
        """Epoch -> its grid in ``samples/``, in epoch order (empty when there is none)."""
        found = {int(p.stem[5:]): p for p in self.samples.glob("epoch*.png")
                 if p.stem[5:].isdigit()}
        return dict(sorted(found.items()))

    # What a run leaves: a new run never writes over any of it.
    RECORD = (CONFIG, METRICS, MODEL_EMA, MODEL_BEST, WANDB_ID, "checkpoints", "samples")

    def holds(self, path: Path | str) -> bool:
        """Whether ``path`` is part of this run's record (a file of ``RECORD``, or anything in
        its folders, ``.hydra/`` and ``wandb/``), which no command may overwrite."""
        root, target = self.root.expanduser().resolve(), Path(path).expanduser().resolve()
        if not target.is_relative_to(root) or target == root:
            return False
        top = target.relative_to(root).parts[0]
        return top in (*self.RECORD, self.LOCK, ".hydra", "wandb")

    def earlier_record(self) -> list[str]:
        """The names of an earlier run's files and (non-empty) folders here."""
        return [name for name in self.RECORD
                if (p := self.root / name).is_file() or (p.is_dir() and any(p.iterdir()))]

    def check_start(self, resume: str | None) -> None:
        """Whether a run may start here: a new one (``resume=null``) only where no earlier
        run left a record, and one resumed from another folder's checkpoint (``resume=PATH``)
        only in a folder of its own (a branch), never grafted onto another run's history."""
        record = self.earlier_record()
        if not record or resume == "auto":
            return
        if not resume:
            raise ConfigError(
                f"resume=null but {self.root} holds an earlier run ({', '.join(record)}): pass "
                "resume=auto to continue it, or give this run its own folder (hydra.run.dir=...)")
        if Path(resume).expanduser().resolve().parent != self.checkpoints.resolve():
            raise ConfigError(
                f"resume={resume} is another folder's checkpoint and {self.root} holds a run of "
                f"its own ({', '.join(record)}): resume into that checkpoint's folder, or "
                "branch into an empty folder (hydra.run.dir=...)")


def is_under(change_or_key: str, keys: tuple[str, ...]) -> bool:
    """Whether a key (or a ``key: old -> new`` change) is one of ``keys`` or below one, on
    key boundaries (``trainer.sample_`` is a prefix on purpose: every sample_* key)."""
    key = change_or_key.split(":")[0]
    return any(key == k or key.startswith(k if k.endswith("_") else k + ".") for k in keys)


# --- the checkpoint store: RUN_DIR/checkpoints/ckpt-step{step:09d}.pt -------------------------

PREFIX, SUFFIX = "ckpt-step", ".pt"


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"{PREFIX}{step:09d}{SUFFIX}"


# Exactly what checkpoint_path writes (and write_atomic's temporary names for it): retention
# deletes nothing else, whatever a user keeps beside the checkpoints.
_CHECKPOINT = re.compile(rf"{PREFIX}\d{{9}}{re.escape(SUFFIX)}")
_CHECKPOINT_TMP = re.compile(rf"{PREFIX}\d{{9}}{re.escape(SUFFIX)}\.\w+\.tmp")


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first (by the step in the name)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _CHECKPOINT.fullmatch(p.name) and p.is_file())


def prune(folder: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (and temporary files a killed write of
    one left); names the run did not write are never touched."""
    for stray in folder.iterdir():
        if _CHECKPOINT_TMP.fullmatch(stray.name):
            stray.unlink(missing_ok=True)
    if keep > 0:
        for old in list_checkpoints(folder)[:-keep]:
            old.unlink(missing_ok=True)


def hydra_record(cfg: DictConfig) -> dict[str, str]:
    """What Hydra saves in a run's ``.hydra/`` (the config as composed, Hydra's own config and
    the command's overrides), read before the run changes its config; {} outside run.py.
    conf/config.yaml turns Hydra's own saving off: Hydra writes before the run has checked
    that the folder is its own, and a refused start must leave an earlier run's record as it
    was (``RunFolder.save_hydra_record`` writes it once the folder is this run's)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    return {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml({"hydra": hc}),
            "overrides.yaml": OmegaConf.to_yaml(list(hc.overrides.task))}


def resolve_run_dir() -> Path:
    """Hydra's output directory for this run or multirun job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        raise ConfigError("no Hydra run directory: call train(cfg, run_dir=...) outside run.py")
    return Path(HydraConfig.get().runtime.output_dir)


def resume_command(run_dir: Path) -> str:
    """The command that continues this run from its latest checkpoint."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return f"train(cfg, run_dir={str(run_dir)!r}) with resume=auto in cfg"
    keep = [o for o in HydraConfig.get().overrides.task
            if not o.startswith(("resume=", "hydra.run.dir="))]
    command = shlex.split(os.environ.get(COMMAND_ENV, "python run.py"))  # as it was typed
    return shlex.join([*command, *keep, "resume=auto", f"hydra.run.dir={run_dir}"])


class RunFolderBusyError(UserError):
    """Another live process is writing the run folder; the message names it."""


class RunFolderLock:
    """One writer per run folder: an exclusive lock on ``RUN_DIR/.lock`` for the run's life
    (``files.try_lock``: a crashed run never leaves its folder locked); the file says who
    holds it, for the refusal of a second writer."""

    def __init__(self, run_dir: Path) -> None:
        self.path = RunFolder(run_dir).lock
        self._lock: FileLock | None = None

    def acquire(self) -> None:
        """Take the lock, or RunFolderBusyError naming who holds it (nothing is written)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = try_lock(self.path)
        if self._lock is None:
            try:
                holder = read_regular(self.path).decode(errors="replace").strip()[:200]
            except ReadError:
                holder = ""
            raise RunFolderBusyError(
                f"{self.path.parent} is being written by another run "
                f"({holder or 'another process'}): wait for it to end, or give this run its "
                "own folder (hydra.run.dir=...)")

    def record_holder(self) -> None:
        """Say in the lock file who holds it, once this run may start here."""
        self.path.write_text(f"pid {os.getpid()} on {socket.gethostname()} since "
                             f"{time.strftime('%Y-%m-%d %H:%M:%S')}")

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
