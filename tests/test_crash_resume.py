"""Crashes: SIGKILL at three points, SIGTERM and Ctrl-C. Each test injects one fault and checks
that nothing before the last completed checkpoint is lost and that the resumed run equals an
uninterrupted one. docs/reliability.md tabulates them.

Subprocess tests run ``python -m tests.faults`` (run.py with one fault patched in from
outside); the Ctrl-C tests call ``train`` in this process.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cartoondiff.inference import checkpoint as ckpt
from cartoondiff.runs import folder as run_folder
from cartoondiff.runs.records import read_metrics
from cartoondiff.train import train
from tests.conftest import (
    REPO,
    TINY,
    assert_same,
    checkpoint_steps,
    compose_tiny,
    on_step,
)

# Eight steps, a checkpoint every two: a crash may cost at most two steps of work.
RUN = ("trainer.max_steps=8", "trainer.checkpoint_every=2")
# One thread per process: on a shared 2-core machine two OpenMP threads spin against other
# work and run ~10x slower; one thread is also what makes the subprocess runs comparable.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _launch(cache_dir: Path, run_dir: Path, *overrides: str,
            fault: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """run.py with ``overrides``, under tests/faults.py with the ``fault`` flags."""
    cmd = [sys.executable, "-m", "tests.faults", *fault, "--", *TINY,
           f"data.cache_dir={cache_dir}", *RUN, f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=180)

def _resumed_at(output: str) -> int:
    match = re.search(r"resumed from \S+ at step (\d+)", output)
    assert match, output
    return int(match.group(1))


def _assert_same_run(reference: Path, run: Path) -> None:
    """Same final weights, EMA, optimizer, RNG states and per-step losses."""
    final = run_folder.list_checkpoints(reference / "checkpoints")[-1]
    a, b = ckpt.load(final), ckpt.load(run / "checkpoints" / final.name)
    for key in a.keys() - {"config", "train_seconds"}:  # where it ran; how long it took
        assert_same(a[key], b[key], key)
    assert_same(ckpt.load(reference / "model_ema.pt")["model"],
                ckpt.load(run / "model_ema.pt")["model"])

    def losses(d: Path) -> list[tuple[int, float]]:
        rows = read_metrics(d / "metrics.jsonl")
        return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]

    assert losses(run) == losses(reference) and len(losses(run)) == 8


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir) -> Path:
    """The same run, uninterrupted (in this process: it computes exactly as run.py does)."""
    run_dir = tmp_path_factory.mktemp("reference")
    train(compose_tiny(cache_dir, *RUN), run_dir=run_dir)
    return run_dir


# ---------------------------------------------------------------------------------------------
# Crashes


def test_sigkill_at_three_points_loses_nothing(reference, cache_dir, tmp_path):
    run = tmp_path / "run"
    ckpt_dir = run / "checkpoints"

    # 1. SIGKILL in the middle of step 3, one step after checkpoint 2.
    result = _launch(cache_dir, run, fault=("--kill-in-step", "3"))
    assert result.returncode == -signal.SIGKILL
    assert checkpoint_steps(run) == [2]

    # 2. SIGKILL half-way through writing checkpoint 6 (half its bytes are on disk).
    result = _launch(cache_dir, run, "resume=auto",
                     fault=("--kill-in-save", "ckpt-step000000006.pt"))
    assert result.returncode == -signal.SIGKILL
    assert _resumed_at(result.stdout) == 2
    assert checkpoint_steps(run) == [2, 4], (
        "the half-written checkpoint never takes a checkpoint's name")
    assert len(list(ckpt_dir.glob("ckpt-step000000006.pt.*.tmp"))) == 1

    # 3. SIGKILL half-way through exporting model_ema.pt, after the last checkpoint.
    result = _launch(cache_dir, run, "resume=auto", fault=("--kill-in-save", "model_ema.pt"))
    assert result.returncode == -signal.SIGKILL
    assert _resumed_at(result.stdout) == 4, "resume=auto ignores the half-written file"
    assert checkpoint_steps(run) == [4, 6, 8]
    assert not (run / "model_ema.pt").exists()

    # 4. Finish: nothing before the last completed checkpoint was redone differently.
    result = _launch(cache_dir, run, "resume=auto")
    assert result.returncode == 0, result.stderr
    assert _resumed_at(result.stdout) == 8
    assert not list(run.rglob("*.tmp")), "temporary files of killed writes are cleaned up"
    _assert_same_run(reference, run)


def test_sigterm_checkpoints_and_prints_a_resume_command_that_works(reference, cache_dir,
                                                                     tmp_path):
    run = tmp_path / "run"
    result = _launch(cache_dir, run, fault=("--term-in-step", "3"))
    assert result.returncode == 128 + signal.SIGTERM, "exits as a preempted process would"
    assert "stopped by signal 15 at step 3" in result.stdout
    assert checkpoint_steps(run) == [2, 3], "the step in flight finishes and is checkpointed"

    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("resume with: "))
    command = shlex.split(line.removeprefix("resume with: "))
    assert command[:2] == ["python", "run.py"]
    assert "resume=auto" in command and f"hydra.run.dir={run}" in command
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=REPO, env=ENV,
                             capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert _resumed_at(resumed.stdout) == 3
    _assert_same_run(reference, run)

def _send(sig: int, times: int = 1):  # noqa: ANN202
    def action(loss: torch.Tensor) -> torch.Tensor:
        for _ in range(times):
            # raise_signal runs the Python handler before returning; os.kill may be delivered
            # to another (torch) thread and two quick kills can merge into one under load.
            signal.raise_signal(sig)
        return loss

    return action


def test_ctrl_c_checkpoints_and_says_how_to_resume(make_cfg, tmp_path, monkeypatch, capsys):
    on_step(monkeypatch, 3, _send(signal.SIGINT))
    metrics = train(make_cfg(*RUN), run_dir=tmp_path)
    assert metrics["stopped_by_signal"] == 2 and metrics["step"] == 3
    assert checkpoint_steps(tmp_path) == [2, 3]
    out = capsys.readouterr().out
    assert "stopped by signal 2 at step 3" in out
    assert f"resume with: train(cfg, run_dir='{tmp_path}') with resume=auto" in out
    monkeypatch.undo()
    assert train(make_cfg(*RUN, "resume=auto"), run_dir=tmp_path)["step"] == 8
    assert _resumed_at(capsys.readouterr().out) == 3


def test_second_ctrl_c_stops_at_once_and_loses_only_the_interval(make_cfg, tmp_path,
                                                                 monkeypatch):
    on_step(monkeypatch, 3, _send(signal.SIGINT, times=2))
    # A second Ctrl-C reaches the handler the run started from: Python's, unless the shell
    # started this process in the background (`cmd &` ignores SIGINT), so set it here.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(make_cfg(*RUN), run_dir=tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert checkpoint_steps(tmp_path) == [2]
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_stop_at_an_epoch_end_loses_no_grid(make_cfg, tmp_path, monkeypatch):
    """Ctrl-C in the step that ends epoch 0 (6 steps of 8 avatars) cuts its grid short; the
    resumed run draws it, so every epoch has its grid."""
    on_step(monkeypatch, 6, _send(signal.SIGINT))
    run = ("trainer.max_steps=12", "trainer.checkpoint_every=4")
    assert train(make_cfg(*run), run_dir=tmp_path)["step"] == 6
    assert not (tmp_path / "samples" / "epoch000.png").exists()
    monkeypatch.undo()
    train(make_cfg(*run, "resume=auto"), run_dir=tmp_path)
    assert sorted(p.name for p in (tmp_path / "samples").glob("epoch*.png")) == [
        "epoch000.png", "epoch001.png"]


def test_resuming_a_finished_run_says_so_and_changes_nothing(make_cfg, tmp_path, capsys):
    train(make_cfg(*RUN), run_dir=tmp_path)
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert train(make_cfg(*RUN, "resume=auto"), run_dir=tmp_path)["step"] == 8
    assert f"{tmp_path} finished at step 8: nothing to do" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before
