"""A training run's folder: where it is, and the command that continues it."""

from __future__ import annotations

import shlex
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

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


def run_name(cfg: DictConfig) -> str:
    """The run's name: ``logger.name`` if set, else its overrides (``attention=mha4,...``)."""
    if OmegaConf.select(cfg, "logger.name"):
        return str(cfg.logger.name)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        skip = ("hydra.", "logger.", "resume", "trainer.device", "trainer.progress_bar")
        task = [o for o in HydraConfig.get().overrides.task if not o.startswith(skip)]
        if task:
            return ",".join(task)
    return "default"
