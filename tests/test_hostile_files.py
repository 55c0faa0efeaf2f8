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


# --- the commands that read run folders: figures, report, sample (issue 33) ----------------


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory, cache_dir) -> Path:
    """A tiny run of one epoch (a grid: samples/epoch000.png), evaluated at its end (eval/ rows),
    with an evaluation JSON beside it (RUN/eval.json, the shape the evaluate command writes)."""
    from tests.test_report import fake_evaluation

    run = tmp_path_factory.mktemp("evaluated") / "run"
    result = _train(run, cache_dir, "logger.mode=disabled", "trainer.max_steps=6",
                    "evaluate.every_epochs=1", "evaluate.n=4", "evaluate.classifier.epochs=1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "samples" / "epoch000.png").is_file()
    fake_evaluation(run / "eval.json")
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock")))


def _command(module: str, *args: object) -> subprocess.CompletedProcess:
    """``python -m module args``; a command that blocks fails the test by its timeout."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_a_fifo_in_place_of_an_evaluation_or_a_grid_is_refused_not_waited_on(evaluated_run,
                                                                             tmp_path):
    run = _copy(evaluated_run, tmp_path)
    evaluation, grid = run / "eval.json", run / "samples" / "epoch000.png"
    for path in (evaluation, grid):
        path.unlink()
        os.mkfifo(path)
    for module, *args in (("cartoondiff.report", run, "final=eval.json"),
                          ("cartoondiff.figures", "attributes", evaluation,
                           f"out={tmp_path / 'a.png'}"),
                          ("cartoondiff.figures", "grid", run, f"out={tmp_path / 'g.png'}")):
        named = grid if "grid" in args else evaluation
        _one_line_exit_2(_command(module, *args), f"{named}: not a regular file")
    assert evaluation.is_fifo() and grid.is_fifo() and not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("kind", ["fifo", "symlink", "/dev/null"])
def test_report_never_replaces_an_out_that_is_not_a_regular_file(evaluated_run, tmp_path,
                                                                   kind):
    import stat

    if kind == "/dev/null":
        if os.geteuid() != 0 or not Path(kind).is_char_device():
            pytest.skip("replacing /dev/null needs root (and a /dev/null)")
        out = Path(kind)
    elif kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("needs FIFOs (POSIX)")
        out = tmp_path / "table.md"
        os.mkfifo(out)
    else:
        (tmp_path / "mine.md").write_text("the user's own file\n")
        out = tmp_path / "table.md"
        out.symlink_to(tmp_path / "mine.md")
    before = os.lstat(out)
    _one_line_exit_2(_command("cartoondiff.report", evaluated_run, f"out={out}"),
                     f"out='{out}' is invalid")
    after = os.lstat(out)
    assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(before.st_mode)
    assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    if kind == "symlink":
        assert (tmp_path / "mine.md").read_text() == "the user's own file\n"


def test_an_out_in_a_runs_record_is_refused_and_the_record_kept(evaluated_run, tmp_path):
    run = _copy(evaluated_run, tmp_path)
    before = _bytes(run)
    grid = run / "samples" / "epoch000.png"
    for module, *args, named in (
            ("cartoondiff.report", run, f"out={run / 'metrics.jsonl'}", "part of the run record"),
            ("cartoondiff.report", run, "final=eval.json", f"out={run / 'eval.json'}",
             f"it is {run / 'eval.json'}"),
            ("cartoondiff.figures", "curves", run, f"out={grid}", "part of the run record"),
            ("cartoondiff.figures", "attributes", run / "eval.json", f"out={grid}",
             "part of the run record"),
            ("cartoondiff.figures", "blog", run, f"out={run / 'samples'}",
             "part of the run record"),
            ("cartoondiff.sample", f"checkpoint={run / 'model_ema.pt'}", f"out={grid}",
             "part of the run record")):
        _one_line_exit_2(_command(module, *args), "out=", named)
    assert _bytes(run) == before


def _damage(run: Path) -> None:
    """Rows and an evaluation JSON with huge numbers, wrong types and missing keys, beside
    the good ones."""
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        for row in ('{"step": 7, "train/loss": 1e999, "train/epoch": 1.2}',
                    f'{{"step": 8, "train/loss": {10**400}, "train/epoch": "x"}}',
                    f'{{"step": {10**400}, "train/loss": 0.5, "eval/hair_color": 0.5}}',
                    '{"step": 9, "train/loss": "abc", "train/epoch": [1]}',
                    '{"step": 10, "train/loss": null, "train/epoch": null}',
                    '{"step": 11, "eval/faithfulness_mean": [1], "epoch": "x"}',
                    f'{{"step": 12, "eval/faithfulness_mean": 0.5, "epoch": {10**400}}}'):
            f.write(row + "\n")
    evaluation = json.loads((run / "eval.json").read_text())
    good = evaluation["runs"][0]
    evaluation["runs"] += [
        {**good, "guidance": None}, {k: v for k, v in good.items() if k != "metrics"},
        {**good, "steps": 10**400}, {**good, "guidance": "x"}, [1],
        {**good, "guidance": 9.0, "metrics": {"faithfulness_mean": 10**400, "hair_color": "x"}}]
    evaluation["chance"]["hair_color"] = [1]
    evaluation["classifier"] = None
    (run / "eval.json").write_text(json.dumps(evaluation))


HUGE = "1" + "0" * 36 + "..."  # 10**400 as a warning shows it


def test_damaged_rows_and_values_are_skipped_and_named(evaluated_run, tmp_path):
    from tests.test_report import svg_series

    run = _copy(evaluated_run, tmp_path)
    _damage(run)
    metrics, evaluation = run / "metrics.jsonl", run / "eval.json"
    results = {args[0]: _command(module, *args) for module, *args in (
        ("cartoondiff.report", run, "final=eval.json"),
        ("cartoondiff.figures", "curves", run, f"out={tmp_path / 'curves.svg'}"),
        ("cartoondiff.figures", "loss_quality", run, f"out={tmp_path / 'loss_quality.svg'}"),
        ("cartoondiff.figures", "attributes", evaluation, f"out={tmp_path / 'attributes.svg'}"),
        ("cartoondiff.figures", "settings", evaluation, f"out={tmp_path / 'settings.svg'}"))}
    for name, result in results.items():
        assert result.returncode == 0 and "Traceback" not in result.stderr, (name,
                                                                              result.stderr)
    report, curves = results[run].stderr, results["curves"].stderr
    for line in ("step 7: train/loss=inf not a finite number; skipped",
                 f"step 8: train/loss={HUGE}, train/epoch='x' not a finite number; skipped",
                 f"step {HUGE}: too large; row skipped",
                 "step 9: train/loss='abc', train/epoch=[1] not a finite number; skipped",
                 "step 11: eval/faithfulness_mean=[1] not a finite number; skipped"):
        assert f"{metrics} {line}" in report, report
    assert f"{metrics} step 10: train/loss=None is not a finite number; skipped" in curves
    assert f"{metrics} step 12: epoch={HUGE} is not a finite number; skipped" in results[
        "loss_quality"].stderr
    assert "| final loss |" in results[run].stdout
    for name in (run, "attributes", "settings"):
        warned = results[name].stderr
        for line in ("setting 2: guidance=None is not a finite number; skipped",
                     "setting 3: no metrics mapping; skipped",
                     f"setting 4: steps={HUGE} is not an integer >= 1; skipped",
                     "setting 5: guidance='x' is not a finite number; skipped",
                     "setting 6: not a JSON object; skipped",
                     f"setting 7: metrics: faithfulness_mean={HUGE}, hair_color='x' not a "
                     "finite number; skipped",
                     ": chance: hair_color=[1] not a finite number; skipped",
                     ": classifier.accuracy is not a mapping of numbers; ignored"):
            assert f"{evaluation}{'' if line[0] == ':' else ' '}{line}" in warned, (name, warned)
    assert all((tmp_path / f"{name}.svg").is_file() for name in
               ("curves", "loss_quality", "attributes", "settings"))
    # drawn: the two good settings (w=0, w=2), and the last one's row of bars (its faithfulness
    # was damaged, so it is no point against guidance)
    drawn = svg_series(tmp_path / "settings.svg")
    assert list(drawn) == ["ddim, steps 25"] and len(drawn["ddim, steps 25"]) == 2
    assert (tmp_path / "attributes.svg").read_text().count('id="bar-') == 3 * 18


def test_nothing_usable_left_is_one_line_naming_the_file(evaluated_run, tmp_path):
    run = _copy(evaluated_run, tmp_path)
    metrics, evaluation = run / "metrics.jsonl", run / "eval.json"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    metrics.write_text("".join(json.dumps({**r, "train/loss": "abc"} if "train/loss" in r else r)
                               + "\n" for r in rows))
    evaluation.write_text(json.dumps({**json.loads(evaluation.read_text()), "runs": []}))
    for module, *args, named in (
            ("cartoondiff.report", run, f"{metrics}: no finite train/loss"),
            ("cartoondiff.figures", "curves", run, f"out={tmp_path / 'c.png'}",
             f"{metrics} has no 'train/loss' values"),
            ("cartoondiff.figures", "attributes", evaluation, f"out={tmp_path / 'a.png'}",
             f"{evaluation}: not an evaluation JSON (no usable setting among its 0 runs)"),
            ("cartoondiff.figures", "settings", evaluation, f"out={tmp_path / 's.png'}",
             f"{evaluation}: not an evaluation JSON")):
        _one_line_exit_2(_command(module, *args), named)
    assert not list(tmp_path.glob("*.png"))


def test_a_bad_schedule_value_is_refused_before_any_avatar_is_read(tmp_path):
    # a data root that does not exist: reading the avatars first would name it instead
    result = _command("cartoondiff.figures", "forward", "data=cartoonset",
                      f"data.root={tmp_path / 'none'}", "noise_schedule.beta_end=abc",
                      f"out={tmp_path / 'f.png'}")
    _one_line_exit_2(result, "noise_schedule.beta_end='abc' is invalid")
    assert not (tmp_path / "f.png").exists()
