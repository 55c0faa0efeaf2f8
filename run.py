"""Train a cartoon-avatar diffusion model: ``python run.py [group=option ...] [key=value ...]``.

A thin Hydra wrapper; the work happens in ``cartoondiff.train.train``.
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from cartoondiff.train import train

    train(cfg)


if __name__ == "__main__":
    main()
