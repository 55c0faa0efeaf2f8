"""Hostile files and refused starts, driven from outside as a user would: the commands run in
subprocesses on run folders where something was planted.

- A refused start (an earlier run's folder, a held lock, a bad value) leaves every byte of the
  earlier run as it was, ``.hydra/`` included.
- Readers open only regular files and never block: a FIFO in place of a record is named in
  one line, exit 2. Writers never replace what is not a regular file.
- Rows nested deeper than the JSON parser goes are damaged rows, not a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cartoondiff.runs.files import try_lock
from tests.conftest import REPO, TINY

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_SILENT": "true"}
for debug in ("CARTOONDIFF_DEBUG", "HYDRA_FULL_ERROR"):
    ENV.pop(debug, None)


def _train(run: Path, cache_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *TINY, f"data.cache_dir={cache_dir}",
                           "logger.mode=offline", f"hydra.run.dir={run}", *overrides],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


def _bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (W&B's own folder aside) by its path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "wandb" not in p.relative_to(folder).parts}


def _one_line_exit_2(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in last, last


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache_dir) -> Path:
    run = tmp_path_factory.mktemp("earlier") / "run"
    result = _train(run, cache_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "run.log").is_file()
    return run


def test_a_refused_start_leaves_every_byte_of_the_earlier_run(finished_run, cache_dir):
    before = _bytes(finished_run)
    # a new run in its folder, with other values
    _one_line_exit_2(_train(finished_run, cache_dir, "optim.optimizer.lr=0.5"),
                     "holds an earlier run")
    # a bad value
    _one_line_exit_2(_train(finished_run, cache_dir, "model.unet.num_heads=3"),
                     "model.unet.num_heads=3 is invalid")
    # a resume while another process writes the folder
    lock = try_lock(finished_run / ".lock")
    assert lock is not None
    try:
        _one_line_exit_2(_train(finished_run, cache_dir, "resume=auto"),
                         "is being written by another run")
    finally:
        lock.release()
    assert _bytes(finished_run) == before


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_a_fifo_in_place_of_the_wandb_id_is_refused_not_waited_on(finished_run, cache_dir,
                                                                   tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns(".lock"))
    (run / "wandb_id.txt").unlink()
    os.mkfifo(run / "wandb_id.txt")
    _one_line_exit_2(_train(run, cache_dir, "resume=auto", "trainer.max_steps=3"),
                     "wandb_id.txt is a FIFO, not a regular file")
    assert (run / "wandb_id.txt").is_fifo(), "never replaced"


def test_a_row_nested_too_deeply_is_a_damaged_row(finished_run, cache_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns(".lock"))
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    result = _train(run, cache_dir, "resume=auto", "trainer.max_steps=3")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipping a damaged row (nested too deeply)" in result.stdout + result.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 3


def _planted(tiny_checkpoint: Path, folder: Path, cache_dir: str) -> Path:
    """A copy of the tiny model whose stored config names ``cache_dir``."""
    from cartoondiff.inference import checkpoint as ckpt

    state = ckpt.load(tiny_checkpoint)
    state["config"]["data"]["cache_dir"] = cache_dir
    path = folder / "model_ema.pt"
    ckpt.save_atomic(state, path)
    return path


def _evaluate(checkpoint: Path, cache: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cartoondiff.evaluate",
                           f"checkpoint={checkpoint}", "n=4", "steps=2", "classifier_epochs=1",
                           "diversity_groups=2", "diversity_per_group=2", "wandb=disabled",
                           f"cache_dir={cache}"], cwd=REPO, env={**ENV, **env},
                          capture_output=True, text=True, timeout=300)


def test_a_checkpoint_never_chooses_where_anything_is_written(tiny_checkpoint, tmp_path):
    planted = tmp_path / "planted"
    checkpoint = _planted(tiny_checkpoint, tmp_path / "run", str(planted))
    result = _evaluate(checkpoint, tmp_path / "users_cache")
    assert result.returncode == 0, result.stderr[-2000:]
    assert not planted.exists() and (tmp_path / "users_cache" / "classifiers").is_dir()
    # an interpolation in a stored config is never resolved
    home = tmp_path / "home"
    hostile = _planted(tiny_checkpoint, tmp_path / "run2", "${oc.env:PLANTED_HOME}/pwned")
    result = _evaluate(hostile, tmp_path / "users_cache", PLANTED_HOME=str(home))
    _one_line_exit_2(result, "holds an interpolation at config.data.cache_dir")
    assert not home.exists()


@pytest.mark.parametrize("args, message", [
    (["--help", "bogus=1"], "Could not override 'bogus'. To append to your config use +bogus=1"),
    (["-m", "attention=single,bogus"], "Could not find 'attention/bogus'"),
    (["model.tau.projections=2x"], "Could not override 'model.tau.projections'"),
    (["hydra.run.dir=A_FILE"], "hydra.run.dir='A_FILE' is invalid: expected a folder: A_FILE is "
                               "a file"),
])
def test_a_mistake_on_the_training_command_line_is_one_line(tmp_path, args, message):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    args = [a.replace("A_FILE", str(a_file)) for a in args]
    result = subprocess.run([sys.executable, "run.py", *TINY, *args], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=120)
    _one_line_exit_2(result, message.replace("A_FILE", str(a_file)))
    assert result.stderr.strip().count("\n") == 0, result.stderr
