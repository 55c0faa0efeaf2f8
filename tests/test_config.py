"""Every option of every config group composes and instantiates; bad values are refused."""

from __future__ import annotations

import functools

import pytest
import torch
from hydra.utils import instantiate

from cartoondiff.config import ConfigError, validate_config
from tests.conftest import REPO

GROUPS = [
    "data",
    "tau",
    "attention",
    "model",
    "noise_schedule",
    "optim",
    "sampler",
    "logger",
    "trainer",
]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((REPO / "conf" / g).glob("*.yaml"))]


def test_every_group_has_options():
    assert {g for g, _ in OPTIONS} == set(GROUPS)


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(make_cfg, tmp_path, group, option):
    extra = [f"data.root={tmp_path}"] if (group, option) == ("data", "cartoonset") else []
    if (group, option) == ("model", "blog"):
        extra.append("data.image_size=64")
    cfg = make_cfg(f"{group}={option}", *extra)
    validate_config(cfg)
    with torch.device("meta") if option == "blog" else torch.device("cpu"):
        model = instantiate(cfg.model)
    assert isinstance(model, torch.nn.Module)
    betas = instantiate(cfg.noise_schedule)
    assert betas.shape == (cfg.noise_schedule.T,)
    optimizer = instantiate(cfg.optim.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
    cfg.trainer.total_steps = 10
    instantiate(cfg.optim.scheduler)(optimizer=optimizer)
    assert isinstance(instantiate(cfg.sampler), functools.partial)
    assert isinstance(instantiate(cfg.logger.tracker), functools.partial)
    data = instantiate(cfg.data)
    assert data.batch_size == cfg.data.batch_size


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.optimizer.lr=-1", "optim.optimizer.lr"),
        ("optim.optimizer.lr=0", "optim.optimizer.lr"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.normalize=zero_one", "data.normalize"),
        ("diffusion.p_uncond=1.0", "diffusion.p_uncond"),
        ("noise_schedule.T=0", "noise_schedule.T"),
        ("noise_schedule.beta_end=1e-5", "beta_start/beta_end"),
        ("noise_schedule.beta_end=1.5", "beta_start/beta_end"),
        ("sampler.guidance=-1", "sampler.guidance"),
        ("trainer.device=tpu", "trainer.device"),
        ("logger.mode=sometimes", "logger.mode"),
        ("data=cartoonset", "data.root"),
    ],
)
def test_bad_values_name_their_key(make_cfg, override, key):
    cfg = make_cfg(override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(cfg)


def test_cartoonset_root_must_exist(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        validate_config(make_cfg("data=cartoonset", f"data.root={tmp_path / 'missing'}"))
