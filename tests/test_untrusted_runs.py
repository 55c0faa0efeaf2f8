"""A run folder is a record that others read (issue 23, items 3-5): a damaged by-product never
blocks a resume, the commands that read run folders treat them as untrusted input, and every
option is checked before any work. Each fault is a real file, each command a real process; the
commands of one test run in one process (``_run_commands``) to keep the suite fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from cartoondiff.runs.records import read_metrics
from cartoondiff.train import train
from tests.conftest import REPO, TINY

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
ENV.pop("CARTOONDIFF_DEBUG", None)
ENV.pop("HYDRA_FULL_ERROR", None)

# Runs each (command, argv) as its ``python -m`` entry point would (cli.execute: one line and exit
# status 2 for a user's mistake) and marks where each one's output starts and how it ended.
# "train" is ``train(compose(argv), run_dir=argv[0])``, run.py's work without Hydra's folder.
_BATCH = """
import importlib, json, sys
from cartoondiff.runs import cli
def train(argv):
    from cartoondiff.train import train
    train(cli.compose(argv[1:]), run_dir=argv[0])
for command, argv in json.loads(sys.argv[1]):
    print("=== begin", file=sys.stderr, flush=True)
    main = train if command == "train" else importlib.import_module(command).main
    try:
        cli.execute(main, argv)
        code = 0
    except SystemExit as err:
        code = err.code
    print(f"=== end {code}", file=sys.stderr, flush=True)
"""


def _run_commands(commands: list[tuple[str, list[str]]]) -> list[tuple[int, str]]:
    """(exit status, stdout and stderr) of each command, all run in one real process."""
    done = subprocess.run([sys.executable, "-u", "-c", _BATCH, json.dumps(commands)], cwd=REPO,
                          env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300)
    parts = done.stdout.split("=== begin\n")[1:]
    assert len(parts) == len(commands), done.stdout[-3000:]
    results = []
    for part in parts:
        text, _, code = part.rpartition("=== end ")
        results.append((int(code.strip()), text))
    return results


def _tiny(*overrides: str) -> list[str]:
    """TINY with ``overrides`` replacing its values of the same keys."""
    keys = {o.split("=")[0] for o in overrides}
    return [t for t in TINY if t.split("=")[0] not in keys] + list(overrides)


def _png(path: Path, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), "white").save(path)
    return path


# --- 3. a damaged by-product never blocks a resume ------------------------------------------


def test_damaged_by_products_never_block_a_resume(make_cfg, cache_dir, tmp_path):
    run = tmp_path / "run"
    train(make_cfg("trainer.max_steps=2"), run_dir=run)  # checkpoint 2, grids, metrics
    # The faults, each a real file: an empty W&B id, a grid cut in half, two malformed metrics
    # rows, a row whose grid is a symlink to a PNG outside the run folder, and a folder where
    # the final grid goes.
    (run / "wandb_id.txt").write_text("")
    (run / "samples" / "final.png").unlink()
    (run / "samples" / "final.png").mkdir()
    grid = run / "samples" / "forward_process.png"
    grid.write_bytes(grid.read_bytes()[: grid.stat().st_size // 2])
    outside = _png(tmp_path / "elsewhere" / "secret.png")
    (run / "samples" / "planted.png").symlink_to(outside)
    bad_rows = ['[1, 2]', '{"step": "one", "train/loss": 0.5}']
    planted = json.dumps({"step": 1, "planted_path": str(run / "samples" / "planted.png"),
                          "planted_caption": "", "planted_rows": []})
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:2] + bad_rows + [planted] + lines[2:])
                                       + "\n")

    resumed = subprocess.run(
        [sys.executable, "run.py", *_tiny(f"data.cache_dir={cache_dir}", "logger.mode=offline",
                                          "trainer.max_steps=3", "resume=auto",
                                          f"hydra.run.dir={run}")],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-3000:]
    assert "Traceback" not in out and "logger is invalid" not in out
    assert "resumed from" in out and "at step 2" in out
    assert f"{run / 'wandb_id.txt'} is damaged (empty" in out
    assert f"{grid} is damaged or not a sample grid" in out
    assert f"{run / 'metrics.jsonl'} line 3: skipping a damaged row (not a JSON object)" in out
    assert f"{run / 'metrics.jsonl'} line 4: skipping a damaged row (no integer step" in out
    assert "planted.png is outside the run folder; not replayed" in out
    assert f"{run / 'samples' / 'final.png'} is a folder, not a regular file: refusing to " \
        "replace it; the grid is skipped, training goes on" in out
    # nothing is lost: the bad rows are set aside, the run finished and logged step 3
    assert (run / "metrics.jsonl.damaged").read_text().splitlines() == bad_rows
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl") if "train/loss" in r] == [
        1, 2, 3]
    assert len((run / "wandb_id.txt").read_text()) == 8
    assert (run / "model_ema.pt").is_file()
    assert not [p for p in run.rglob("*.tmp") if "wandb" not in p.parts]


# --- 4. readers treat run folders as untrusted input ----------------------------------------


def _fake_run(root: Path, name: str, config: str, rows: list[str]) -> Path:
    """A run folder as run.py leaves it (config.yaml, metrics.jsonl, one epoch grid), with
    the config and rows given verbatim."""
    run = root / name
    _png(run / "samples" / "epoch000.png")
    (run / "config.yaml").write_text(config)
    (run / "metrics.jsonl").write_text("".join(r + "\n" for r in rows))
    return run


def test_readers_treat_run_folders_as_untrusted(tmp_path):
    good_rows = [json.dumps({"step": s, "train/loss": 1.0 / s, "train/epoch": s / 4})
                 for s in range(1, 5)]
    good = _fake_run(tmp_path, "good", "seed: 0\nlogger:\n  group: onehot\n", good_rows)
    bad_rows = good_rows[:2] + ['{"step": 3, "train/loss": "abc"}', "[1]", '{"step": 4, '
                                '"train/loss": NaN}', '{"step": 5, "eval/hair_color": [1]}']
    damaged = _fake_run(tmp_path, "damaged", "a: [1, 2\n", bad_rows)
    hostile = _fake_run(tmp_path, "hostile", "seed: {a: 1}\nlogger: {group: [x]}\nfigures:\n"
                        "  ../../escaped: 0\n  fig5: 0\n", good_rows)
    forged = _fake_run(tmp_path, "forged",  # a name that would add a row to the Markdown table
                       'seed: 2\nlogger: {group: "x |\\n| forged | 9 | 0.0 |"}\n', good_rows)
    bomb = _fake_run(tmp_path, "bomb", "seed: 1\n", good_rows)
    Image.new("1", (9_500, 9_500)).save(bomb / "samples" / "epoch000.png")  # 11 kB, over the limit
    out = tmp_path / "out"
    results = _run_commands([
        ("cartoondiff.figures", ["blog", str(hostile), f"out={out}"]),
        ("cartoondiff.report", [str(good), str(damaged), str(hostile), str(good) + "/",
                                str(forged), "keys=hair_color"]),
        ("cartoondiff.figures", ["curves", str(damaged), str(good), str(good),
                                 f"out={tmp_path / 'c.png'}"]),
        ("cartoondiff.figures", ["grid", str(bomb), f"out={tmp_path / 'g.png'}"]),
    ])
    for _, text in results:
        assert "Traceback" not in text, text
    (blog, blog_text), (report, report_text), (curves, curves_text), (grid, grid_text) = results
    # blog: a figure name from the config is a plain file name, checked before any is written
    assert blog == 2 and "figures.'../../escaped' is invalid: expected a plain file name" in (
        blog_text)
    assert not (tmp_path / "escaped.png").exists() and not out.exists()
    # report: each bad row and the bad config named in one line and skipped; a folder given
    # twice is one run; a non-scalar seed or group is ignored
    assert report == 0
    for line in (f"{damaged / 'config.yaml'} is not a readable run config",
                 f"{damaged / 'metrics.jsonl'} line 4: skipping a damaged row (not a JSON object)",
                 f"{damaged / 'metrics.jsonl'} step 3: train/loss='abc' not a finite number",
                 "step 4: train/loss=nan not a finite number",
                 "step 5: eval/hair_color=[1] not a finite number",
                 f"{good} is the same folder as {good}: counted once"):
        assert line in report_text, report_text
    assert "| onehot | 0 | 0.2500 |" in report_text  # one seed, not two
    assert "| damaged | - |" in report_text and "| hostile | - |" in report_text
    assert "| x \\| \\| forged \\| 9 \\| 0.0 \\| | 2 |" in report_text
    assert not any(line.startswith("| forged") for line in report_text.splitlines())
    # curves: the same, and the picture is drawn
    assert curves == 0 and (tmp_path / "c.png").is_file()
    assert f"{good} is the same folder as {good}: counted once" in curves_text
    # a grid too large to be a sample grid: one line naming it
    assert grid == 2 and f"{bomb / 'samples' / 'epoch000.png'} is damaged or not a sample grid" \
        in grid_text and not (tmp_path / "g.png").exists()


# --- 5. every option checked before any work -------------------------------------------------


def test_every_option_is_checked_before_any_work(tiny_checkpoint, cache_dir, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    a_folder = tmp_path / "result.json"
    a_folder.mkdir()
    run = tiny_checkpoint.parent
    judge_cache = tmp_path / "judge_cache"
    ckpt = f"checkpoint={tiny_checkpoint}"
    folder = tmp_path / "train"
    cases = [  # (command, argv, the message's start after "error: ")
        ("cartoondiff.evaluate.__main__", [ckpt, f"out={a_folder}", f"cache_dir={judge_cache}"],
         f"out='{a_folder}' is invalid: expected a new file or a regular one: it is a folder"),
        ("cartoondiff.evaluate.__main__",
         [ckpt, f"out={a_file}/e.json", f"cache_dir={judge_cache}"],
         f"out='{a_file}/e.json' is invalid: expected a path inside a folder: {a_file} is a "
         "file"),
        ("cartoondiff.evaluate.__main__", [ckpt, "classifier_epochs=100000000",
                                           f"cache_dir={judge_cache}"],
         "classifier_epochs=100000000 is invalid"),
        ("cartoondiff.evaluate.__main__", [ckpt, "diversity_per_group=100000000",
                                           f"cache_dir={judge_cache}"],
         "diversity_per_group=100000000 is invalid"),
        ("cartoondiff.sample", [ckpt, "n=1000000000"], "n=1000000000 is invalid"),
        ("cartoondiff.sample", [ckpt, f"out={a_file}/s.png"], f"out='{a_file}/s.png' is "
         "invalid"),
        ("cartoondiff.data.synthesize", [f"out={tmp_path / 'syn'}", "n=100000000"],
         "n=100000000 is invalid"),
        ("cartoondiff.data.synthesize", [f"out={a_file}", "n=2"], f"out='{a_file}' is invalid"),
        ("cartoondiff.figures", ["curves", str(run), "smooth=1"], "smooth=1 is invalid"),
        ("cartoondiff.figures", ["curves", str(run), f"out={tmp_path / 'fig'}"],
         f"out='{tmp_path / 'fig'}' is invalid: expected a path ending in one of"),
        ("cartoondiff.figures", ["blog", str(run), f"out={a_file}"], f"out='{a_file}' is "
         "invalid: expected a folder"),
        ("cartoondiff.report", [str(run), "loss_tail=nan"], "loss_tail=nan is invalid"),
        ("cartoondiff.report", [str(run), "final=../../x.json"], "final='../../x.json' is "
         "invalid"),
        ("cartoondiff.train.memory", ["model=tiny", "data.image_size=4096", "measure=false"],
         "data.image_size=4096 is invalid"),
        ("cartoondiff.data.download", ["cartoonset10k", f"dest={a_file}"],
         f"dest='{a_file}' is invalid"),
        ("train", [str(folder), *_tiny(f"data.cache_dir={cache_dir}", "data.image_size=4096")],
         "data.image_size=4096 is invalid: expected an integer in [8, 512]"),
        ("train", [str(folder), *_tiny(f"data.cache_dir={cache_dir}", "data.crop=10000")],
         "data.crop=10000 is invalid: expected an integer in [1, 500]"),
        ("train", [str(folder), *_tiny(f"data.cache_dir={cache_dir}",
                                        "trainer.sample_seed=18446744073709551617")],
         "trainer.sample_seed=18446744073709551617 is invalid"),
        ("train", [str(folder), *_tiny(f"data.cache_dir={cache_dir}", "trainer.sample_rows=1000",
                                        "trainer.sample_cols=1000")],
         "trainer.sample_rows=1000 is invalid: expected sample_rows * sample_cols <= 10000"),
        ("train", [str(folder), *_tiny(f"data.cache_dir={cache_dir}", "data.n=100000000000")],
         "data.n=100000000000 is invalid: expected at most"),
    ]
    results = _run_commands([(command, argv) for command, argv, _ in cases])
    for (command, argv, message), (code, text) in zip(cases, results, strict=True):
        assert code == 2 and f"error: {message}" in text and "Traceback" not in text, (
            command, argv, text)
    # nothing was done: no judge trained, no picture, no avatars, no run folder locked
    assert not judge_cache.exists() and not folder.exists() and not (tmp_path / "syn").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "result.json"]


def test_a_damaged_sweep_record_names_itself(tmp_path, caplog):
    from cartoondiff.runs.naming import read_sweep_overrides

    for text in ("hydra: [1, 2", "hydra: {sweeper: {params: [1, 2]}}"):  # bad YAML, a list
        (tmp_path / "multirun.yaml").write_text(text)
        assert read_sweep_overrides(tmp_path) is None
        assert f"{tmp_path / 'multirun.yaml'} is not a readable sweep record" in caplog.text


def test_a_damaged_wandb_folder_leaves_the_run_without_wandb(tmp_path, caplog):
    from cartoondiff.runs.tracking import Tracker

    (tmp_path / "wandb").write_text("a file where W&B's folder goes")
    tracker = Tracker(tmp_path, config={})  # offline, the real wandb.init
    assert tracker.wandb is None and f"W&B: could not start a run in {tmp_path / 'wandb'}" in (
        caplog.text)
    tracker.log({"train/loss": 0.5}, step=1)
    tracker.finish()
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "train/loss": 0.5}]


def test_sample_never_replaces_a_text_file_it_did_not_write(tiny_checkpoint: Path,
                                                            tmp_path: Path) -> None:
    """``out=X.png`` writes X.txt beside it: an unrelated X.txt already there is refused up
    front (one line, exit 2, the file intact); an earlier grid's captions are replaced."""
    notes = tmp_path / "grid.txt"
    notes.write_text("my notes\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "cartoondiff.sample",
                           f"checkpoint={tiny_checkpoint}", "n=2", f"out={tmp_path / 'grid.png'}"],
                          capture_output=True, text=True, cwd=REPO, env=ENV)
    assert done.returncode == 2 and "grid.txt" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert notes.read_text(encoding="utf-8") == "my notes\n"
    assert not (tmp_path / "grid.png").exists()
