"""Every experiment config composes at both scales and trains two steps at its CPU scale;
the figure command renders from a run directory."""

from __future__ import annotations

import pytest
from PIL import Image

from cartoondiff import figures
from cartoondiff.train import train
from tests.conftest import REPO

EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))
BLOG = [e for e in EXPERIMENTS if not e.startswith("beyond_")]  # the blog's own design
BEYOND = [e for e in EXPERIMENTS if e.startswith("beyond_")]
# The CPU scale, shrunk further to seconds: fewer images, smaller batch, fewer steps.
QUICK = ["data.n=24", "data.batch_size=8", "noise_schedule.T=40", "sampler.steps=3",
         "trainer.max_steps=2", "trainer.sample_rows=2", "trainer.sample_cols=2",
         "trainer.device=cpu", "logger.mode=disabled", "trainer.progress_bar=false"]


# The blog's sample-grid figures and the epoch each shows (0-based; figure 6 is a diagram).
BLOG_FIGURES = {"fig1": 0, "fig2": 4, "fig3": 0, "fig4": 6, "fig5": 39, "fig7": 0, "fig8": 2,
                "fig9": 10, "fig10": 0, "fig11": 10, "fig12": 9, "fig12_1": 20, "fig13": 9,
                "fig14": 18, "fig15": 9, "fig16": 18, "fig17": 10, "fig18": 14}


def test_each_blog_figure_is_drawn_by_its_experiment_at_the_blogs_scale(tmp_path):
    """Every figure has an experiment that names it at the blog's epoch and trains past it
    (grids are numbered from 0: drawing "epoch 20" takes 21 epochs)."""
    from tests.conftest import compose_cfg

    drawn = {}
    for name in EXPERIMENTS:
        cfg = compose_cfg(f"experiment={name}", f"data.root={tmp_path}")
        for figure, epoch in (cfg.figures or {}).items():
            assert epoch < cfg.trainer.max_epochs, f"{name} stops before {figure}'s epoch"
            drawn[figure] = epoch
    assert drawn == BLOG_FIGURES


@pytest.mark.parametrize("name", BLOG)
def test_gpu_scale_composes_with_the_blog_model(tmp_path, name):
    from tests.conftest import compose_cfg

    cfg = compose_cfg(f"experiment={name}", f"data.root={tmp_path}")
    assert cfg.data.source == "cartoonset" and cfg.data.image_size == 64
    assert cfg.model.unet.base_channels == 128  # the blog preset
    assert cfg.logger.group == name and cfg.logger.tags


@pytest.mark.parametrize("name", BLOG)
def test_blog_experiments_keep_the_blogs_design(name):
    from tests.conftest import compose_cfg

    cfg = compose_cfg(f"experiment={name}", "data=synthetic")
    assert cfg.model.unet.global_context is False and cfg.diffusion.prediction == "eps"
    assert not cfg.model.unet.cross_attention or cfg.tau._target_.endswith(".Tau")
    assert (cfg.sampler.method, cfg.sampler.steps, cfg.sampler.eta) == ("ddim", 50, 0.0)


@pytest.mark.parametrize("name", BEYOND)
def test_beyond_experiments_run_at_the_default_scale_or_the_blogs(name):
    from tests.conftest import compose_cfg

    cfg = compose_cfg(f"experiment={name}")
    assert cfg.data.image_size == 32 and cfg.model.unet.base_channels == 32
    assert cfg.logger.group == name and "beyond" in cfg.logger.tags
    gpu = compose_cfg(f"experiment={name}", "scale=gpu", "data=synthetic")
    assert gpu.data.image_size == 64 and gpu.model.unet.base_channels == 128


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_cpu_scale_trains_two_steps(cache_dir, tmp_path, name):
    from tests.conftest import compose_cfg

    cfg = compose_cfg(f"experiment={name}", "scale=cpu", f"data.cache_dir={cache_dir}", *QUICK)
    assert cfg.data.source == "synthetic" and cfg.logger.group == name
    metrics = train(cfg, run_dir=tmp_path)
    assert metrics["step"] == 2


def test_figure_command_renders_grids_from_runs(make_cfg, tmp_path):
    runs = []
    for attention in ("single", "mha4"):
        run = tmp_path / attention
        # 48 images / batch 8 = 6 steps an epoch: two epochs give grids epoch000, epoch001
        train(make_cfg(f"attention={attention}", "trainer.max_steps=12",
                       f"logger.name={attention}"), run_dir=run)
        runs.append(run)
    assert sorted(figures.epoch_grids(runs[0])) == [0, 1]
    one = figures.main(["grid", str(runs[0]), "epoch=0", f"out={tmp_path / 'g.png'}"])
    grid = Image.open(runs[0] / "samples" / "epoch000.png")
    assert Image.open(one).width == 2 * grid.width
    both = figures.main(["compare", str(runs[0]), str(runs[1]), f"out={tmp_path / 'c.png'}"])
    assert Image.open(both).width > 2 * Image.open(one).width
    with pytest.raises(FileNotFoundError, match="epoch 7"):
        figures.main(["grid", str(runs[0]), "epoch=7"])

