"""Rebuild a trained model from a checkpoint, for sampling and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cartoondiff.data.dataset import NORMALIZATIONS
from cartoondiff.diffusion import Diffusion
from cartoondiff.train import checkpoint as ckpt


@dataclass
class Trained:
    """An EMA model in eval mode, its diffusion process and the run's resolved config."""

    model: nn.Module
    diffusion: Diffusion
    cfg: DictConfig

    @property
    def image_size(self) -> int:
        return int(self.cfg.data.image_size)

    @property
    def value_range(self) -> tuple[float, float]:
        return NORMALIZATIONS[self.cfg.data.normalize]


def load_trained(path: Path | str, device: torch.device | str = "cpu") -> Trained:
    """Load a training checkpoint (its EMA weights) or a ``model_ema.pt`` export."""
    state = ckpt.load(path)
    if "config" not in state or "model" not in state:
        raise ckpt.CheckpointError(f"checkpoint {path} has no model config; is it a cartoondiff "
                                   "checkpoint (checkpoints/ckpt-step*.pt or model_ema.pt)?")
    cfg = OmegaConf.create(state["config"])
    model = instantiate(cfg.model)
    weights = state["ema"]["shadow"] if "ema" in state else state["model"]
    ckpt.apply_state_dict(model, weights, path)
    model = model.to(device).eval().requires_grad_(False)
    diffusion = Diffusion(instantiate(cfg.noise_schedule), prediction=cfg.diffusion.prediction)
    return Trained(model, diffusion.to(device), cfg)
