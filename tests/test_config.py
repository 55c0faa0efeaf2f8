"""Every option of every config group composes and instantiates; bad values are refused."""

from __future__ import annotations

import re
import time

import pytest
import torch
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from cartoondiff.config import build, build_diffusion, build_model
from cartoondiff.diffusion import Diffusion, Sampler
from cartoondiff.runs.errors import ConfigError
from cartoondiff.runs.tracking import WandbSettings
from cartoondiff.train import train
from cartoondiff.train.settings import TrainerSettings
from tests.conftest import REPO, compose_cfg

GROUPS = [
    "data",
    "tau",
    "attention",
    "model",
    "noise_schedule",
    "optim",
    "sampler",
    "recipe",
    "debug",
]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((REPO / "conf" / g).glob("*.yaml"))]


def test_every_config_group_is_tested_here():
    """A new group folder under conf/ must join GROUPS (and so the tests below)."""
    folders = {p.name for p in (REPO / "conf").iterdir() if p.is_dir()}
    assert folders - {"hydra", "experiment", "scale"} == set(GROUPS)


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_builds(make_cfg, tmp_path, group, option):
    if (group, option) == ("data", "cartoonset"):  # TINY's data.n is a synthetic-only key
        cfg = compose_cfg("model=tiny", "data=cartoonset", f"data.root={tmp_path}")
    else:
        extra = ["data.image_size=64"] if option == "blog" else []
        cfg = make_cfg(f"{group}={option}", *extra)
    with torch.device("meta") if option == "blog" else torch.device("cpu"):
        model = build_model(cfg)
    assert model.conditional == cfg.model.unet.cross_attention
    diffusion = build_diffusion(cfg)
    assert isinstance(diffusion, Diffusion) and diffusion.T == cfg.noise_schedule.T
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = build(cfg, "optim.optimizer", params=params)
    scheduler = build(cfg, "optim.scheduler")(optimizer, total_steps=10, steps_per_epoch=2.5)
    assert scheduler.get_last_lr()[0] > 0
    assert isinstance(build(cfg, "sampler"), Sampler)
    assert isinstance(build(cfg, "trainer"), TrainerSettings)
    assert isinstance(build(cfg, "logger"), WandbSettings)
    assert build(cfg, "data").batch_size == cfg.data.batch_size


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.optimizer.lr=-1", "optim.optimizer.lr"),  # torch's error, named as typed
        ("data.batch_size=0", "data.batch_size"),
        ("data.normalize=zero_one", "data.normalize"),
        ("diffusion.p_uncond=1.0", "diffusion.p_uncond"),
        ("noise_schedule.T=0", "noise_schedule.T"),
        ("noise_schedule.beta_end=1e-5", "noise_schedule.beta_end"),
        ("noise_schedule.beta_end=1.5", "noise_schedule.beta_end"),
        ("sampler.guidance=-1", "sampler.guidance"),
        ("trainer.device=tpu", "trainer.device"),
        ("logger.mode=sometimes", "logger.mode"),
        ("data.source=cartoonset", "data.root"),  # no folder given
        ("diffusion.p_uncond=-0.1", "diffusion.p_uncond"),
        ("noise_schedule.beta_start=0.03", "noise_schedule.beta_end"),  # reversed
        ("noise_schedule.beta_start=0", "noise_schedule.beta_start"),
        ("optim.optimizer.lr=fast", "optim.optimizer.lr"),
        ("optim.optimizer.betas=[0.9,1.5]", "optim.optimizer.betas"),
        ("data.batch_size=-3", "data.batch_size"),
        ("data.n=4", "data.batch_size"),  # fewer images than one batch
        ("data.image_size=17", "data.image_size"),  # the tiny UNet's 2 levels halve it once
        ("model.unet.num_heads=3", "model.unet.num_heads"),  # does not divide 32 channels
        ("model.unet.attention_levels=[2]", "model.unet.attention_levels"),  # 2 levels: 0, 1
        ("model.unet.norm_groups=5", "model.unet.norm_groups"),
        ("tau.projections=3x", "tau.projections"),
        ("recipe=blog tau.encoding=binary", "tau.encoding"),  # the blog's Tau has encodings
        ("tau.context_dim=16", "tau.context_dim"),  # not the UNet's 32
        ("sampler.method=euler", "sampler.method"),
        ("sampler.steps=null", "sampler.steps"),  # only ddpm runs without a step count
        ("sampler.steps=41", "sampler.steps"),  # more than T=40
        ("sampler.eta=2", "sampler.eta"),
        ("trainer.grad_clip=0", "trainer.grad_clip"),
        ("trainer.ema_decay=1.0", "trainer.ema_decay"),
        ("trainer.max_bad_steps=-1", "trainer.max_bad_steps"),
        ("trainer.checkpoint_every=0", "trainer.checkpoint_every"),
        ("resume=/no/such/checkpoint.pt", "resume"),
        ("resume_changes=[optim.optimizer.lrr]", "resume_changes"),  # no such key
        ("resume_changes=[optim.optimizer._target_]", "resume_changes"),  # not changeable
        ("seed=-1", "seed"),
        ("seed=99999999999999999999", "seed"),
        ("trainer.precision=fp8", "trainer.precision"),
        ("trainer.strategy=fsdp", "trainer.strategy"),
        ("trainer.sample_rows=0", "trainer.sample_rows"),
        ("evaluate.n=1", "evaluate.n"),
        ("evaluate.metric=eval/beauty", "evaluate.metric"),
        # the UNet takes 24, the judge does not: refused before the run, not at its 1st epoch
        ("data.image_size=48 evaluate.every_epochs=1", "data.image_size"),
        ("+evaluate.classifier.epoch=2", "evaluate.classifier"),  # a misspelt setting
        ("optim.scheduler.warmup_steps=-5", "optim.scheduler.warmup_steps"),
    ],
)
def test_bad_values_name_their_key(make_cfg, tmp_path, override, key):
    with pytest.raises(ConfigError, match="^" + re.escape(key) + "[= ]") as info:
        train(make_cfg(*override.split()), run_dir=tmp_path / "run")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists(), "refused before the run folder is made or locked"


def test_image_size_the_model_cannot_halve_names_the_data_key(make_cfg):
    with pytest.raises(ConfigError, match=r"^data\.image_size=18 .*multiple of 4.*3 levels"):
        build_model(make_cfg("model=small", "data.image_size=18"))


def test_unknown_group_option_names_group_and_choices(make_cfg):
    with pytest.raises(MissingConfigException) as info:
        make_cfg("attention=mha8")
    message = str(info.value)
    assert "attention/mha8" in message
    assert "Available options in 'attention'" in message and "mha4" in message


def test_train_checks_the_config_before_any_work(make_cfg, tmp_path):
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"^model\.unet\.num_heads=3 "):
        train(make_cfg("model.unet.num_heads=3"), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists(), "nothing was written"
    assert time.perf_counter() - start < 5
    with pytest.raises(ConfigError, match="no 'data' section"):
        train(OmegaConf.create({"seed": 0}), run_dir=tmp_path / "run")


def test_cartoonset_root_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="^data.root="):
        build(compose_cfg("data=cartoonset", f"data.root={tmp_path / 'missing'}"), "data")
    with pytest.raises(ConfigError, match=r"^data.root is required"):
        build(compose_cfg("data=cartoonset"), "data")
