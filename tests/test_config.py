"""Every option of every config group composes and instantiates; bad values are refused."""

from __future__ import annotations

import functools
import re
import time

import pytest
import torch
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cartoondiff.config import ConfigError, validate_config
from cartoondiff.train import train
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
    assert isinstance(instantiate(cfg.logger), functools.partial)
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
        ("noise_schedule.beta_end=1e-5", "noise_schedule.beta_start/beta_end"),
        ("noise_schedule.beta_end=1.5", "noise_schedule.beta_start/beta_end"),
        ("sampler.guidance=-1", "sampler.guidance"),
        ("trainer.device=tpu", "trainer.device"),
        ("logger.mode=sometimes", "logger.mode"),
        ("data=cartoonset", "data.root"),
        ("diffusion.p_uncond=-0.1", "diffusion.p_uncond"),
        ("noise_schedule.beta_start=0.03", "noise_schedule.beta_start/beta_end"),  # reversed
        ("noise_schedule.beta_start=0", "noise_schedule.beta_start/beta_end"),
        ("optim.optimizer.lr=fast", "optim.optimizer.lr"),
        ("data.batch_size=-3", "data.batch_size"),
        ("data.n=4", "data.n"),  # fewer images than one batch
        ("data.image_size=17", "data.image_size"),  # the tiny UNet's 2 levels halve it once
        ("attention.num_heads=3", "attention.num_heads"),  # does not divide 32 channels
        ("model.unet.num_heads=3", "model.unet.num_heads"),  # set directly: named directly
        ("model.unet.attention_resolutions=[4]", "model.unet.attention_resolutions"),
        ("model.unet.norm_groups=5", "model.unet.norm_groups"),
        ("attention.kind=mha8", "attention.kind"),
        ("tau.projections=3x", "tau.projections"),
        ("sampler.sampler=euler", "sampler.sampler"),
        ("sampler.steps=41", "sampler.steps"),  # more than T=40
        ("sampler.eta=2", "sampler.eta"),
        ("trainer.grad_clip=0", "trainer.grad_clip"),
        ("trainer.ema_decay=1.0", "trainer.ema_decay"),
        ("trainer.max_bad_steps=-1", "trainer.max_bad_steps"),
        ("trainer.checkpoint_every=0", "trainer.checkpoint_every"),
        ("resume=/no/such/checkpoint.pt", "resume"),
    ],
)
def test_bad_values_name_their_key(make_cfg, override, key):
    cfg = make_cfg(override)
    with pytest.raises(ConfigError, match="^" + re.escape(key) + "=") as info:
        validate_config(cfg)
    assert "\n" not in str(info.value)


def test_image_size_the_model_cannot_halve_names_the_data_key(make_cfg):
    with pytest.raises(ConfigError, match=r"^data\.image_size=18 .*multiple of 4.*3 levels"):
        validate_config(make_cfg("model=small", "data.image_size=18"))


def test_unknown_group_option_names_group_and_choices(make_cfg):
    with pytest.raises(MissingConfigException) as info:
        make_cfg("attention=mha8")
    message = str(info.value)
    assert "attention/mha8" in message
    assert "Available options in 'attention'" in message and "mha4" in message


def test_train_checks_the_config_before_any_work(make_cfg, tmp_path):
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"^attention\.num_heads=3 "):
        train(make_cfg("attention.num_heads=3"), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists(), "nothing was written"
    assert time.perf_counter() - start < 5
    with pytest.raises(ConfigError, match="no 'data' section"):
        train(OmegaConf.create({"seed": 0}), run_dir=tmp_path / "run")


def test_cartoonset_root_must_exist(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        validate_config(make_cfg("data=cartoonset", f"data.root={tmp_path / 'missing'}"))
