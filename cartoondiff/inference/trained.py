"""Rebuild a trained model from a checkpoint, for sampling and evaluation.

The checkpoint's weights load with ``weights_only=True`` (``checkpoint.load``) and its stored
config is treated as data: only the project's own model and diffusion classes are rebuilt
from it (``config.build`` with an allowlist), so loading a checkpoint never runs code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from cartoondiff.config import (
    DIFFUSION_TARGETS,
    MODEL_TARGETS,
    SAMPLER_TARGETS,
    build,
    build_diffusion,
    build_model,
)
from cartoondiff.data.dataset import NORMALIZATIONS
from cartoondiff.diffusion import Diffusion, Sampler
from cartoondiff.inference import checkpoint as ckpt
from cartoondiff.models import Denoiser
from cartoondiff.runs.errors import ConfigError


@dataclass
class TrainedModel:
    """An EMA model in eval mode, its diffusion process and the run's resolved config."""

    model: Denoiser
    diffusion: Diffusion
    cfg: DictConfig

    @property
    def image_size(self) -> int:
        return int(self.cfg.data.image_size)

    @property
    def normalize(self) -> str:
        """The data range the model was trained in: "pm1" or "unit"."""
        return str(self.cfg.data.normalize)

    @property
    def conditional(self) -> bool:
        return self.model.conditional

    @property
    def sampler(self) -> Sampler:
        """The run's own sampler (its grids and evaluations used it): the commands' default."""
        try:
            return build(self.cfg, "sampler", allowed=SAMPLER_TARGETS)
        except ConfigError as err:
            raise ckpt.CheckpointError(f"its stored sampler config: {err}") from None


def stored_config(path: Path | str, state: dict) -> DictConfig:
    """The run config inside a checkpoint, checked to be one this version can rebuild."""
    config = state.get("config")
    if not isinstance(config, dict) or "model" not in state:
        raise ckpt.CheckpointError(f"checkpoint {path} has no model config; is it a cartoondiff "
                                   "checkpoint (checkpoints/ckpt-step*.pt or model_ema.pt)?")
    if where := _interpolation(config):  # a stored config is resolved data: never resolve
        raise ckpt.CheckpointError(f"checkpoint {path}: its config holds an interpolation at "
                                   f"{where}; a stored config is data, not a template")
    try:
        cfg = OmegaConf.create(config)
    except Exception as err:  # noqa: BLE001 -- any structure OmegaConf refuses
        raise ckpt.CheckpointError(f"checkpoint {path}: its config is unreadable: {err}") from None
    normalize = OmegaConf.select(cfg, "data.normalize")
    size = OmegaConf.select(cfg, "data.image_size")
    if normalize not in NORMALIZATIONS or not isinstance(size, int) or size < 1:
        raise ckpt.CheckpointError(f"checkpoint {path}: data.normalize={normalize!r} / "
                                   f"data.image_size={size!r} in its config are not usable")
    return cfg


def _interpolation(node: object, key: str = "config") -> str | None:
    """The key of the first string holding ``${`` in a nested dict or list, else None."""
    if isinstance(node, str):
        return key if "${" in node else None
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    return next((found for k, v in items if (found := _interpolation(v, f"{key}.{k}"))), None)


def load_trained(path: Path | str, device: torch.device | str = "cpu") -> TrainedModel:
    """Load a training checkpoint (its EMA weights) or a ``model_ema.pt`` export."""
    state = ckpt.load(path)
    cfg = stored_config(path, state)
    try:
        model = build_model(cfg, allowed=MODEL_TARGETS)
        diffusion = build_diffusion(cfg, allowed=DIFFUSION_TARGETS)
    except ConfigError as err:
        raise ckpt.CheckpointError(f"checkpoint {path}: its stored config cannot be rebuilt: "
                                   f"{err}") from None
    weights = state["ema"]["shadow"] if isinstance(state.get("ema"), dict) else state["model"]
    ckpt.apply_state_dict(model, weights, path)
    model = model.to(device).eval().requires_grad_(False)
    return TrainedModel(model, diffusion.to(device), cfg)
