"""A training run's folder: where it is, who writes it, and the command that continues it."""

from __future__ import annotations

import fcntl
import os
import shlex
import socket
import time
from pathlib import Path

from cartoondiff.errors import ConfigError, UserError


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
