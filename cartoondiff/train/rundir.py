"""A training run's folder: where it is, and the command that continues it."""

from __future__ import annotations

import shlex
from pathlib import Path

from cartoondiff.errors import ConfigError


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
