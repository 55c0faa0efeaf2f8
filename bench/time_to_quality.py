"""Benchmark: how fast a training recipe reaches a quality, measured by the run's own judge.

Trains each config (a set of Hydra overrides on top of ``python run.py``) in turn, one after
the other in this session so their times compare, with an evaluation of the EMA model after
every epoch. Prints, config by config, the judge's relative faithfulness (the mean over the
attributes it reads, divided by its ceiling: ``eval/faithfulness_relative``) against the
training time and the images seen, then one line per config: the minutes of training to
reach relative 0.80 and 0.85 (first evaluated epoch at or above; "-" if never).

Training time is ``train/seconds``: the wall time of the optimizer steps alone (not the
grids, the evaluations, or rendering the avatars and training the judge, which a first run
pays once). The first config pays the judge's training; the others find it cached.

    python bench/time_to_quality.py --configs "" "optim.optimizer.lr=0.003"
    python bench/time_to_quality.py --configs "" "data.batch_size=16" --seeds 0 1 --n 256
    python bench/time_to_quality.py --configs "" "trainer.max_epochs=4" -- trainer.precision=fp32

``--`` separates overrides shared by every config. Runs are kept in ``--out`` (a temporary
folder by default) and can be read again with ``--read``.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(REPO))

from cartoondiff.runs.records import read_metrics, read_run_config  # noqa: E402

TARGETS = (0.80, 0.85)
KEY = "eval/faithfulness_relative"


def curve(run_dir: Path) -> list[dict]:
    """One point per evaluated epoch: epoch, step, train seconds, images seen, relative."""
    rows = read_metrics(run_dir / "metrics.jsonl")
    config = read_run_config(run_dir)
    per_step = int(config["data"]["batch_size"]) * int(config["trainer"]["grad_accum"])
    return [{"epoch": r["epoch"], "step": r["step"], "seconds": r["train/seconds"],
             "images": r["step"] * per_step, "relative": r[KEY]}
            for r in rows if KEY in r and "train/seconds" in r]


def minutes_to(points: list[dict], target: float) -> float | None:
    """Training minutes at the first evaluated epoch whose relative score reaches ``target``."""
    return next((p["seconds"] / 60 for p in points if p["relative"] >= target), None)


def train(config: str, shared: list[str], seed: int, n: int, run_dir: Path) -> float:
    """``python run.py`` with ``config`` and an evaluation after every epoch; its wall time."""
    cmd = [sys.executable, "run.py", *shared, *shlex.split(config), f"seed={seed}",
           "evaluate.every_epochs=1", f"evaluate.n={n}", "logger.mode=disabled",
           "trainer.progress_bar=false", f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def report(results: list[tuple[str, int, list[dict]]]) -> str:
    """The curves, then the minutes to each target per config and seed."""
    lines = []
    for config, seed, points in results:
        lines.append(f"{config or '(default)'}, seed {seed}")
        lines.append(f"  {'epoch':>5} {'train min':>9} {'images':>9} {'relative':>8}")
        lines += [f"  {p['epoch']:>5} {p['seconds'] / 60:>9.2f} {p['images']:>9,} "
                  f"{p['relative']:>8.3f}" for p in points]
    lines.append("")
    head = "".join(f"{'min to ' + format(t, '.2f'):>12}" for t in TARGETS)
    lines.append(f"{'config':<40} {'seed':>4} {head} {'final':>7}")
    for config, seed, points in results:
        cells = "".join(f"{(f'{m:.2f}' if (m := minutes_to(points, t)) else '-'):>12}"
                        for t in TARGETS)
        final = f"{points[-1]['relative']:.3f}" if points else "-"
        lines.append(f"{(config or '(default)')[:40]:<40} {seed:>4} {cells} {final:>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    shared = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=[""],
                        help="one quoted string of overrides per config ('' is the default)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--n", type=int, default=256, help="samples per evaluation")
    parser.add_argument("--out", type=Path, default=None, help="where the runs are kept")
    parser.add_argument("--read", action="store_true", help="read the runs in --out again")
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="time-to-quality-"))
    results = []
    for i, config in enumerate(args.configs):
        for seed in args.seeds:
            run_dir = out / f"{i}-seed{seed}"
            if not args.read:
                wall = train(config, shared, seed, args.n, run_dir)
                print(f"{config or '(default)'} seed {seed}: {wall / 60:.1f} min in all "
                      f"({run_dir})", file=sys.stderr)
            results.append((config, seed, curve(run_dir)))
    text = report(results)
    print(text)
    return text


if __name__ == "__main__":
    main()
