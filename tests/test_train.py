"""The training loop: every ablation option trains, resume is exact, W&B holds what was logged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cartoondiff.inference import checkpoint as ckpt
from cartoondiff.runs import folder as run_folder
from cartoondiff.runs.records import read_metrics
from cartoondiff.train import train
from tests.conftest import REPO


@pytest.mark.parametrize("normalize", ["pm1", "unit"])
@pytest.mark.parametrize("encoding", ["raw", "onehot"])
@pytest.mark.parametrize("projections", ["1x", "2x"])
@pytest.mark.parametrize("attention", ["none", "single", "mha4"])
def test_two_steps_of_every_ablation(
    make_cfg, tmp_path, attention, projections, encoding, normalize
):
    cfg = make_cfg(
        f"attention={attention}",
        f"tau={encoding}",
        f"tau.projections={projections}",
        f"data.normalize={normalize}",
        "trainer.sample_every_epochs=0",
    )
    metrics = train(cfg, run_dir=tmp_path)
    assert metrics["step"] == 2
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "train/loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["train/loss"])) for r in rows)
    assert (tmp_path / "samples" / "final.png").is_file()
    saved = OmegaConf.load(tmp_path / "config.yaml")
    assert saved.recipe == "beyond_blog" and saved.tau.projections == projections  # one copy
    assert "tau" not in saved.model and "betas" not in saved.diffusion
    (last,) = run_folder.list_checkpoints(tmp_path / "checkpoints")[-1:]
    assert ckpt.load(last)["config"]["recipe"] == "beyond_blog"


def test_resume_is_exact(make_cfg, tmp_path):
    """N steps in one go == N/2 steps, resume=auto, N/2 more: same weights, same losses."""
    common = ("trainer.checkpoint_every=3", "trainer.max_steps=6", "model.unet.dropout=0.1")
    full = train(make_cfg(*common), run_dir=tmp_path / "full")
    first = make_cfg(*common, "trainer.max_steps=3")
    train(first, run_dir=tmp_path / "split")
    train(make_cfg(*common, "resume=auto"), run_dir=tmp_path / "split")
    assert full["step"] == 6

    def losses(d: Path) -> list[float]:
        return [r["train/loss"] for r in read_metrics(d / "metrics.jsonl") if "train/loss" in r]

    assert losses(tmp_path / "full") == losses(tmp_path / "split")
    a = ckpt.load(run_folder.list_checkpoints(tmp_path / "full" / "checkpoints")[-1])
    b = ckpt.load(run_folder.list_checkpoints(tmp_path / "split" / "checkpoints")[-1])
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for name, tensor in a["ema"]["shadow"].items():
        assert torch.equal(tensor, b["ema"]["shadow"][name]), name


def test_the_last_epoch_is_always_evaluated(make_cfg, tmp_path):
    """every_epochs=2 over 3 epochs: after epoch 2, and after the last, whatever the period."""
    train(make_cfg("data.n=16", "trainer.max_steps=null", "trainer.max_epochs=3",
                   "evaluate.every_epochs=2", "evaluate.n=4", "evaluate.classifier.epochs=1",
                   "trainer.sample_every_epochs=0"), run_dir=tmp_path)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in rows if "eval/faithfulness_mean" in r] == [2, 3]


def test_wandb_offline_run_holds_losses_grids_and_config(make_cfg, tmp_path):
    cfg = make_cfg("logger.mode=offline", "trainer.max_steps=3", "data.n=24")
    train(cfg, run_dir=tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    out = subprocess.run(
        [Path(sys.executable).parent / "wandb", "leet", "inspect", "--json", str(runs[0])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    text = json.dumps(records)
    history = [r for r in records if r.get("type") == "history"]
    assert len(history) >= 3, "one history row per logged step"
    assert "train/loss" in text
    assert "samples" in text and "image-file" in text, "the sample grid was logged as an image"
    assert "forward_process" in text
    assert '"cross_attention"' in text and '"num_heads"' in text, "the resolved config was logged"


def test_multirun_makes_separate_runs(tmp_path):
    from tests.conftest import TINY

    cmd = [
        sys.executable,
        "run.py",
        "-m",
        "attention=single,mha4",
        *TINY,
        f"data.cache_dir={tmp_path / 'cache'}",
        "trainer.max_steps=1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True, timeout=300)
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len(jobs) == 2
    for job in jobs:
        assert (job / "metrics.jsonl").is_file() and (job / "config.yaml").is_file()
    assert "attention=single" in jobs[0].name and "attention=mha4" in jobs[1].name


def test_parallel_multirun_with_the_local_launcher(tmp_path):
    """Two jobs at once through hydra-joblib-launcher (conf/hydra/launcher/local.yaml)."""
    from tests.conftest import TINY

    cmd = [sys.executable, "run.py", "-m", "hydra/launcher=local", "hydra.launcher.n_jobs=2",
           "tau.projections=1x,2x", *TINY, f"data.cache_dir={tmp_path / 'cache'}",
           "trainer.max_steps=1", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Joblib.Parallel" in out.stdout + out.stderr
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name[0].isdigit())
    assert [("projections=1x" in j.name, "projections=2x" in j.name) for j in jobs] == [
        (True, False), (False, True)]
    assert all((j / "model_ema.pt").is_file() for j in jobs)
