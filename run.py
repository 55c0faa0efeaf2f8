"""Train a cartoon-avatar diffusion model: ``python run.py [group=option ...] [key=value ...]``.

A thin Hydra wrapper; the work happens in ``cartoondiff.train.train``.
"""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from cartoondiff.train import train

    metrics = train(cfg)
    if metrics.get("stopped_by_signal"):
        # Exit as a killed process would, so retry wrappers (`until python run.py
        # resume=auto ...; do ...`) see a preemption, not a finished run.
        sys.exit(128 + metrics["stopped_by_signal"])


if __name__ == "__main__":
    main()
