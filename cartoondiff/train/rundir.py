"""A training run's folder: where it is, who writes it, and the command that continues it."""

from __future__ import annotations

import fcntl
import os
import shlex
import socket
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cartoondiff.errors import ConfigError, UserError
from cartoondiff.inference import checkpoint as ckpt

# What a training checkpoint holds beyond the weights (model_ema.pt has only "model").
TRAINING_STATE = ("model", "ema", "optimizer", "scheduler", "scaler", "rng", "noise_rng", "step")
# Settings a resumed run may change: how long it trains, where it runs, what it logs and
# draws. Any other change makes it another run (refused unless named in resume_changes).
FREE_TO_CHANGE = ("trainer.device", "trainer.progress_bar", "trainer.log_every",
                  "trainer.checkpoint_every", "trainer.keep_checkpoints", "trainer.sample_",
                  "trainer.max_steps", "trainer.max_epochs", "trainer.compile", "logger.",
                  "evaluate.", "sampler.", "data.cache_dir", "data.root", "data.on_error",
                  "resume", "figures", "blog_epochs", "hydra")


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
    return shlex.join(["python", "run.py", *keep, "resume=auto", f"hydra.run.dir={run_dir}"])


LOCK_NAME = ".lock"


class RunFolderBusyError(UserError):
    """Another live process is writing the run folder; the message names it."""


class RunFolderLock:
    """One writer per run folder: an exclusive ``flock`` on ``RUN_DIR/.lock`` for the run's
    life. The kernel drops the lock when its process ends, however it ends, so a crashed run
    never leaves a folder locked; the file only says who held it last."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFolderBusyError(
                f"{self.path.parent} is being written by another run ({holder}): wait for it "
                "to end, or give this run its own folder (hydra.run.dir=...)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def resume_state(resume: str | None, ckpt_dir: Path) -> tuple[Path, dict] | None:
    """``resume=auto`` (latest good checkpoint of this run, if any) or ``resume=PATH``."""
    if not resume:
        return None
    if resume == "auto":
        found = ckpt.load_latest(ckpt_dir)  # warns about each damaged checkpoint it skips
        if found is None and ckpt.list_checkpoints(ckpt_dir):
            raise ckpt.CheckpointError(f"resume=auto: no checkpoint in {ckpt_dir} loads (see "
                                       "the warnings above); move them aside to start fresh")
        if found is None:
            print(f"resume=auto: no checkpoint in {ckpt_dir}, starting fresh")
        return found
    return Path(resume), ckpt.load(resume)


def same_run_changes(path: Path, state: dict, cfg: DictConfig) -> list[str]:
    """``key: old -> new`` for each setting of ``cfg`` that differs from the checkpoint's and
    was named in ``cfg.resume_changes``; any other change of a setting that alters the result
    (not how long the run trains, where it runs or what it logs) is a ConfigError.

    A resumed run is the same run; a weights-only export is no training checkpoint."""
    missing = [k for k in TRAINING_STATE if k not in state]
    if missing:
        raise ckpt.CheckpointError(
            f"resume={path} is not a training checkpoint (it has no {missing[0]!r}; a "
            "model_ema.pt or model_best.pt export holds weights only): resume from "
            "checkpoints/ckpt-step*.pt, or pass it to python -m cartoondiff.sample")
    saved = state.get("config") if isinstance(state.get("config"), dict) else {}
    current = OmegaConf.to_container(cfg, resolve=True)
    changes = [c for key in sorted(set(saved) | set(current), key=str)
               for c in ckpt.config_changes(saved.get(key), current.get(key), str(key))
               if not c.startswith(FREE_TO_CHANGE)]
    allowed = tuple(OmegaConf.select(cfg, "resume_changes") or ())
    refused = [c for c in changes if not (allowed and c.split(":")[0].startswith(allowed))]
    if refused:
        keys = ",".join(c.split(":")[0] for c in refused)
        raise ConfigError(
            f"resume: {path} is from a run with other settings ({'; '.join(refused)}); a "
            "resumed run must be the same run: resume with its settings, or name the changes "
            f"you mean: resume_changes=[{keys}]")
    return changes
