"""Data-parallel training with torchrun on CPU (gloo, 2 processes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cartoondiff.runs.records import read_metrics
from tests.conftest import REPO, TINY

STEPS = 6
COMMON = [*TINY, f"trainer.max_steps={STEPS}", "data.batch_size=8", "trainer.checkpoint_every=3"]


def _losses(run_dir):
    return [r["train/loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in r]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    env_cache = f"data.cache_dir={base / 'cache'}"
    single = base / "single"
    subprocess.run([sys.executable, "run.py", *COMMON, env_cache, f"hydra.run.dir={single}"],
                   cwd=REPO, check=True, capture_output=True, text=True, timeout=300)
    ddp, cwd = base / "ddp", base / "cwd"
    cwd.mkdir()
    (base / "tmp").mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "run.py"), *COMMON, env_cache, "trainer.strategy=ddp",
         f"hydra.run.dir={ddp}"],
        cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TMPDIR": str(base / "tmp"), "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-3000:]
    return single, ddp, out


def test_ranks_hold_identical_parameters(runs):
    _, ddp, _ = runs
    rows = [r for r in read_metrics(ddp / "metrics.jsonl") if "ddp/max_param_diff" in r]
    assert rows and rows[-1]["ddp/max_param_diff"] == 0.0


def test_loss_curve_matches_single_process_with_same_global_batch(runs):
    single, ddp, _ = runs
    a, b = _losses(single), _losses(ddp)
    assert len(a) == len(b) == STEPS
    # Same data order and global batch; only the per-rank noise draws differ.
    assert a[0] == pytest.approx(b[0], rel=0.2)
    assert sum(a) / STEPS == pytest.approx(sum(b) / STEPS, rel=0.15)


def test_only_rank_zero_writes(runs):
    _, ddp, out = runs
    assert out.stdout.count("output directory:") == 1
    assert (ddp / "model_ema.pt").is_file()
    assert len(list((ddp / "checkpoints").glob("ckpt-step*.pt"))) == 2
    # rank 1 writes nothing of its own: no log in the folder it ran from, nor in a shared /tmp
    assert [p.name for p in (ddp.parent / "cwd").iterdir()] == []
    assert not list((ddp.parent / "tmp").glob("cartoondiff*"))  # torch's own files aside
