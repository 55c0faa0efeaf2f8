"""Charts (matplotlib, through ``cartoondiff.plots``): logged metrics of run folders against
epochs, the loss against quality, and an evaluation JSON's attributes and settings."""

from __future__ import annotations

import json
import logging
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from cartoondiff import plots
from cartoondiff.errors import ArgumentError
from cartoondiff.figures.pictures import run_title
from cartoondiff.plots import ema
from cartoondiff.run_folder import RunFolder
from cartoondiff.run_records import RunFolderError, number, read_run_metrics

log = logging.getLogger(__name__)


def metric_points(run_dir: Path, key: str, x: str = "epoch",
                  from_step: int = 0) -> list[tuple[float, float]]:
    """(x, value) of ``key`` in a run's metrics.jsonl, from ``from_step`` on. ``x="epoch"``:
    epochs completed (an evaluation's ``epoch``, a training row's ``train/epoch``);
    ``x="step"``: the optimizer step."""
    rows = read_run_metrics(run_dir)
    per_epoch = next((r["step"] / r["train/epoch"] for r in rows if r.get("train/epoch")), None)
    points = []
    for row in rows:
        if key not in row or row["step"] < from_step:
            continue
        if x == "step":
            at = row["step"]
        elif "epoch" in row and key.startswith("eval/"):
            at = row["epoch"]
        elif "train/epoch" in row:
            at = row["train/epoch"]
        elif per_epoch:
            at = row["step"] / per_epoch
        else:
            raise RunFolderError(f"{run_dir}: cannot tell the epoch of step {row['step']}; "
                                 "use x=step")
        value = number(row[key])
        if value is None:  # a damaged or non-finite value: named, then skipped
            log.warning("%s step %s: %s=%r is not a finite number; skipped",
                        RunFolder(run_dir).metrics, row["step"], key, row[key])
            continue
        points.append((float(at), value))
    if not points:
        raise RunFolderError(f"{RunFolder(run_dir).metrics} has no {key!r} values"
                             + (f" at or after step {from_step}" if from_step else ""))
    return points


def by_experiment(run_dirs: Sequence[Path]) -> dict[str, list[Path]]:
    """Run folders grouped as W&B groups them (``run_title``): seeds of one experiment."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for d in run_dirs:
        groups[run_title(Path(d))].append(Path(d))
    return dict(groups)


def curves_figure(run_dirs: Sequence[Path], key: str = "train/loss", smooth: float = 0.6,
                  from_step: int = 0, x: str = "epoch") -> Figure:
    """``key`` against epoch (or step), one line per experiment, mean and sd over its seeds."""
    if x not in ("epoch", "step"):
        raise ArgumentError("x", x, "epoch or step")
    series = {}
    for group, runs in by_experiment(run_dirs).items():
        series[group] = []
        for run in runs:
            points = metric_points(run, key, x, from_step)
            smoothed = ema([v for _, v in points], smooth)
            series[group].append(list(zip([p for p, _ in points], smoothed, strict=True)))
    title = f"{key}, smoothed {smooth:g}" if smooth else key
    return plots.line_chart(series, title, x_label="epochs completed" if x == "epoch" else x,
                            y_label=key, log_y=key.endswith("loss"))


def loss_quality_figure(run_dirs: Sequence[Path], key: str = "eval/faithfulness_mean"
                        ) -> Figure:
    """The blog's figures 17-18: ``key`` at each evaluated epoch against that epoch's mean
    training loss, one line per experiment (mean ± sd over its seeds)."""
    series = {}
    for group, runs in by_experiment(run_dirs).items():
        per_run = []
        for run in runs:
            losses = metric_points(run, "train/loss")
            evals = dict(metric_points(run, key))
            rows = {}
            for epoch, value in evals.items():
                window = [v for at, v in losses if epoch - 1 < at <= epoch + 1e-9]
                if window:
                    rows[int(round(epoch))] = (statistics.fmean(window), value)
            per_run.append(rows)
        epochs = sorted(set.intersection(*(set(r) for r in per_run)))
        series[group] = [(e, *_mean_sd([r[e][0] for r in per_run]),
                          *_mean_sd([r[e][1] for r in per_run])) for e in epochs]
    if not any(series.values()):
        raise RunFolderError(f"no epoch of {', '.join(map(str, run_dirs))} has both "
                             f"train/loss and {key!r} (evaluate.every_epochs=1 logs it)")
    return plots.loss_quality_chart(series, key)


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def read_evaluation(path: Path) -> dict:
    """An evaluation JSON (``python -m cartoondiff.evaluate ... out=PATH``)."""
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
        result["runs"][0]["metrics"]  # noqa: B018  (the shape every figure reads)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise RunFolderError(f"{path}: not an evaluation JSON ({err!r})") from None
    return result


def setting_label(run: dict) -> str:
    return f"{run['sampler']} {run['steps']} steps, w={run['guidance']:g}"


def attributes_figure(path: Path, setting: str = "all") -> Figure:
    """An evaluation's per-attribute faithfulness as bars beside chance and the ceiling."""
    from cartoondiff import attributes

    result = read_evaluation(path)
    runs = result["runs"]
    if setting != "all":
        if not (cli_int(setting) is not None and 0 <= int(setting) < len(runs)):
            raise ArgumentError("setting", setting, f"all or an index in [0, {len(runs)})")
        runs = [runs[int(setting)]]
    if len(runs) > len(plots.PALETTE):
        raise ArgumentError("setting", setting, f"an index: {path} holds {len(runs)} settings")
    names = list(attributes.NAMES)
    bars = {setting_label(r): [r["metrics"].get(n) for n in names] for r in runs}
    return plots.attribute_bars(
        names, bars, [result["chance"][n] for n in names],
        [result["classifier"]["accuracy"][n] for n in names],
        f"faithfulness per attribute ({result['n']} samples)")


def settings_figure(path: Path, key: str = "faithfulness_mean", x: str = "auto") -> Figure:
    """An evaluation's ``key`` against guidance or steps (``x``; auto: whichever varies
    more), one line per value of the other settings."""
    runs = read_evaluation(path)["runs"]
    if x == "auto":
        x = max(("guidance", "steps"), key=lambda k: len({r[k] for r in runs}))
    if x not in ("guidance", "steps"):
        raise ArgumentError("x", x, "auto, guidance or steps")
    key = key.removeprefix("eval/")
    if key not in runs[0]["metrics"]:
        raise ArgumentError("key", key, f"one of {', '.join(runs[0]['metrics'])}")
    other = "steps" if x == "guidance" else "guidance"
    series: dict[str, list[list[tuple[float, float]]]] = {}
    for r in runs:
        if r["metrics"].get(key) is None:
            continue
        name = f"{r['sampler']}, {other} {r[other]:g}"
        series.setdefault(name, [[]])[0].append((float(r[x]), float(r["metrics"][key])))
    return plots.line_chart({k: [sorted(v[0])] for k, v in series.items()},
                            f"{key} against {x}", x_label=x, y_label=key)


def cli_int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None
