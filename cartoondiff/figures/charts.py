"""Charts as papers draw them, with matplotlib: the one module that imports it.

The drawing functions (``line_chart``, ``loss_quality_chart``, ``attribute_bars``) take
numbers and return a ``matplotlib.figure.Figure`` (no pyplot: no global state, no display),
with markers on the points, mean and spread over seeds and legends outside the axes so long
names fit; ``save`` writes PNG, SVG or PDF by the file's extension. Every drawn series carries
an SVG id ``series-N`` (a bar: ``bar-SETTING-ATTRIBUTE``), so a test or a script can find what
was drawn. The figure functions below them (``curves_figure``, ``loss_quality_figure``,
``attributes_figure``, ``settings_figure``) read run folders and evaluation files into those
numbers.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
from matplotlib import ticker
from matplotlib.figure import Figure

from cartoondiff.runs.errors import ArgumentError
from cartoondiff.runs.files import write_atomic
from cartoondiff.runs.folder import RunFolder
from cartoondiff.runs.naming import run_title
from cartoondiff.runs.records import (
    RunFolderError,
    metric_value,
    read_evaluation,
    read_run_metrics,
    shown,
)

log = logging.getLogger(__name__)

# Colour-blind-safe palette (Okabe-Ito), cycled when there are more series.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
           "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
FORMATS = (".png", ".svg", ".pdf")
MAX_MARKERS = 40  # a dense curve (a loss logged every step) gets about this many markers

Points = Sequence[tuple[float, float]]  # (x, y) of one run


def ema(values: Sequence[float], weight: float) -> list[float]:
    """Debiased exponential moving average, as W&B's and TensorBoard's smoothing sliders
    (weight 0: unchanged). Debiasing keeps the first points from dragging the curve."""
    out, acc = [], 0.0
    for t, v in enumerate(values, start=1):
        acc = weight * acc + (1 - weight) * v
        out.append(acc / (1 - weight ** t) if weight else v)
    return out


def save(figure: Figure, out: Path) -> Path:
    """Write ``figure`` in the format ``out``'s extension names (.png at 150 dpi, .svg, .pdf)."""
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"{out}: a figure is written as one of {', '.join(FORMATS)}")
    # No creation date in SVG/PDF: the same data draw the same file.
    metadata = {"Date": None} if out.suffix.lower() in (".svg", ".pdf") else {}
    # SVG text stays text (editable in a paper's figure, searchable), not glyph outlines.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "cartoondiff"}):
        write_atomic(out, lambda f: figure.savefig(f, format=out.suffix.lower()[1:], dpi=150,
                                                   bbox_inches="tight", metadata=metadata))
    return out


def style(index: int) -> dict[str, str]:
    return {"color": PALETTE[index % len(PALETTE)], "marker": MARKERS[index % len(MARKERS)]}


def mean_and_spread(runs: Sequence[Points]) -> tuple[list[float], list[float], list[float]]:
    """x values every run has, the mean y there and the sample standard deviation (0 for
    one run)."""
    shared = set.intersection(*({round(x, 6) for x, _ in run} for run in runs))
    xs = sorted(shared)
    by_run = [{round(x, 6): y for x, y in run} for run in runs]
    stats = [_mean_sd([r[x] for r in by_run]) for x in xs]
    return xs, [mean for mean, _ in stats], [sd for _, sd in stats]


def _legend(figure: Figure, n: int) -> None:
    """Below the axes, in as many columns as fit: long names are never cut, and the figure's
    layout leaves no band between the axes and the legend."""
    if n:
        figure.legend(loc="outside lower center", ncols=min(n, 2), frameon=False,
                      fontsize="small")


def line_chart(series: Mapping[str, Sequence[Points]], title: str, x_label: str, y_label: str,
               log_y: bool = False) -> Figure:
    """One line per named series: the mean over its runs (seeds) with a band of ±1 sd where
    there are two or more; markers on the points (on about ``MAX_MARKERS`` of them for dense
    curves), so a series of one point shows as a marker."""
    figure = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = figure.add_subplot()
    for i, (name, runs) in enumerate(series.items()):
        xs, means, sds = mean_and_spread(runs)
        label = f"{name} (mean ± sd of {len(runs)} seeds)" if len(runs) > 1 else name
        (line,) = ax.plot(xs, means, label=label, linewidth=1.6, markersize=4,
                          markevery=max(1, math.ceil(len(xs) / MAX_MARKERS)), **style(i))
        line.set_gid(f"series-{i}")
        if len(runs) > 1:
            ax.fill_between(xs, [m - s for m, s in zip(means, sds, strict=True)],
                            [m + s for m, s in zip(means, sds, strict=True)],
                            color=line.get_color(), alpha=0.2, linewidth=0)
    if log_y:
        ax.set_yscale("log")
        plain = ticker.FuncFormatter(lambda v, _: f"{v:.3g}")
        ax.yaxis.set_major_formatter(plain)  # 0.08, not 8 x 10^-2
        low, high = ax.get_ylim()
        if high / low < 10:  # within one decade: label the minor ticks too, or none show
            ax.yaxis.set_minor_formatter(plain)
            ax.grid(True, which="minor", axis="y", alpha=0.3)
        else:  # 0.2, 0.3 and 0.5 of each decade, without crowding the rest
            ax.yaxis.set_minor_formatter(ticker.FuncFormatter(
                lambda v, _: f"{v:.3g}" if f"{v:.1e}"[0] in "235" else ""))
    ax.set(title=title, xlabel=x_label, ylabel=y_label)
    ax.grid(True, which="major", alpha=0.3)
    _legend(figure, len(series))
    return figure


def loss_quality_chart(series: Mapping[str, Sequence[tuple[int, float, float, float, float]]],
                       metric: str) -> Figure:
    """The blog's figures 17-18 as one chart: for each named experiment, its evaluated
    epochs as points (x: that epoch's mean training loss, y: ``metric``), joined in epoch
    order and labelled with the epoch. ``series``: name -> (epoch, loss, loss sd, metric,
    metric sd) rows; the sds (over seeds) draw error bars when positive."""
    figure = Figure(figsize=(7.0, 4.6), layout="constrained")
    ax = figure.add_subplot()
    for i, (name, rows) in enumerate(series.items()):
        rows = sorted(rows)
        epochs, loss, loss_sd, value, value_sd = zip(*rows, strict=True)
        spread = any(loss_sd) or any(value_sd)
        bars = ax.errorbar(loss, value, xerr=loss_sd if spread else None,
                           yerr=value_sd if spread else None, label=name + (
                               " (mean ± sd over seeds)" if spread else ""), linewidth=1.4,
                           markersize=5, capsize=2, **style(i))
        bars.lines[0].set_gid(f"series-{i}")
        for e, x, y in zip(epochs, loss, value, strict=True):
            ax.annotate(f"ep{e}", (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize="x-small", color=style(i)["color"])
    ax.set(title=f"{metric} against training loss (epN: after N epochs)",
           xlabel="mean training loss over the epoch", ylabel=metric)
    ax.grid(True, alpha=0.3)
    _legend(figure, len(series))
    return figure


def attribute_bars(attributes: Sequence[str], bars: Mapping[str, Sequence[float | None]],
                   chance: Sequence[float | None], ceiling: Sequence[float | None], title: str
                   ) -> Figure:
    """Horizontal bars of accuracy per attribute (one bar per named setting, side by side in
    the attribute's row), with chance (a uniform guess) and the judge's ceiling (its accuracy
    on held-out real avatars) marked on each row (None: no bar, no mark). The rows keep one
    height however many settings share them: 18 attributes fit a page."""
    n, k = len(attributes), max(1, len(bars))
    figure = Figure(figsize=(7.0, 1.2 + 0.27 * n + 0.18 * math.ceil((k + 2) / 2)),
                    layout="constrained")
    ax = figure.add_subplot()
    height = min(0.6, 0.84 / k)
    rows = list(range(n))
    for i, (name, values) in enumerate(bars.items()):
        offset = (i - (k - 1) / 2) * height
        drawn = ax.barh([r + offset for r in rows], [v or 0.0 for v in values], height=height,
                        color=PALETTE[i % len(PALETTE)], label=name)
        for j, patch in enumerate(drawn.patches):
            patch.set_gid(f"bar-{i}-{j}")  # setting i, attribute j
    marks = {"zorder": 3, "clip_on": False}  # a ceiling of 1.0 is drawn whole
    for values, mark in ((chance, {"marker": "|", "s": 140, "linewidths": 2, "color": "#444444",
                                   "label": "chance (a uniform guess)"}),
                         (ceiling, {"marker": "D", "s": 18, "color": "black",
                                    "label": "ceiling (the judge on held-out real avatars)"})):
        known = [(v, r) for v, r in zip(values, rows, strict=True) if v is not None]
        ax.scatter([v for v, _ in known], [r for _, r in known], **mark, **marks)
    ax.set_yticks(rows, list(attributes), fontsize="small")
    ax.set_ylim(n - 0.5, -0.5)  # first attribute on top, no empty row above or below
    ax.set_xlim(0, 1.0)
    ax.set(title=title, xlabel="accuracy of the judge on the requested attribute")
    ax.grid(True, axis="x", alpha=0.3)
    _legend(figure, len(bars) + 2)
    return figure


def metric_points(run_dir: Path, key: str, x: str = "epoch",
                  from_step: int = 0) -> list[tuple[float, float]]:
    """(x, value) of ``key`` in a run's metrics.jsonl, from ``from_step`` on. ``x="epoch"``:
    epochs completed (an evaluation's ``epoch``, a training row's ``train/epoch``);
    ``x="step"``: the optimizer step. A row whose value or position is not a finite number
    is named in a warning and skipped."""
    path = RunFolder(run_dir).metrics
    rows = read_run_metrics(run_dir)
    per_epoch = next((s / e for r in rows if (s := metric_value(r["step"])) is not None
                      and (e := metric_value(r.get("train/epoch")))), None)
    points = []
    for row in rows:
        if key not in row or row["step"] < from_step:
            continue
        if x == "step":
            at_key = "step"
        elif "epoch" in row and key.startswith("eval/"):
            at_key = "epoch"
        elif "train/epoch" in row:
            at_key = "train/epoch"
        elif per_epoch:
            at_key = "step"  # divided by the steps per epoch below
        else:
            raise RunFolderError(f"{run_dir}: cannot tell the epoch of step {row['step']}; "
                                 "use x=step")
        value, at = metric_value(row[key]), metric_value(row[at_key])
        if value is None or at is None:  # a damaged or non-finite value: named, then skipped
            bad = key if value is None else at_key
            log.warning("%s step %s: %s=%s is not a finite number; skipped", path,
                        shown(row["step"]), bad, shown(row[bad]))
            continue
        points.append((at / per_epoch if x == "epoch" and at_key == "step" else at, value))
    if not points:
        raise RunFolderError(f"{path} has no {key!r} values"
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
    positive = all(v > 0 for runs in series.values() for run in runs for _, v in run)
    return line_chart(series, title, x_label="epochs completed" if x == "epoch" else x,
                      y_label=key, log_y=key.endswith("loss") and positive)


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
    return loss_quality_chart(series, key)


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def attributes_figure(path: Path, setting: str = "all") -> Figure:
    """An evaluation's per-attribute faithfulness as bars beside chance and the ceiling."""
    from cartoondiff import attributes

    evaluation = read_evaluation(path)
    settings = evaluation.settings
    if setting != "all":
        settings = [s for s in settings if str(s.index) == str(setting)]
        if not settings:
            raise ArgumentError("setting", setting, "all or the index of a usable setting: "
                                + ", ".join(str(s.index) for s in evaluation.settings))
    if len(settings) > len(PALETTE):
        raise ArgumentError("setting", setting, f"an index: {path} holds {len(settings)} "
                            "settings")
    names = list(attributes.NAMES)
    bars = {f"{s.sampler} {s.steps} steps, w={s.guidance:g}": [s.metrics.get(n) for n in names]
            for s in settings}
    samples = f" ({evaluation.n} samples)" if evaluation.n is not None else ""
    return attribute_bars(names, bars, [evaluation.chance.get(n) for n in names],
                          [evaluation.ceiling.get(n) for n in names],
                          f"faithfulness per attribute{samples}")


def settings_figure(path: Path, key: str = "faithfulness_mean", x: str = "auto") -> Figure:
    """An evaluation's ``key`` against guidance or steps (``x``; auto: whichever varies
    more), one line per value of the other settings."""
    settings = read_evaluation(path).settings
    if x == "auto":
        x = max(("guidance", "steps"), key=lambda k: len({getattr(s, k) for s in settings}))
    if x not in ("guidance", "steps"):
        raise ArgumentError("x", x, "auto, guidance or steps")
    key = key.removeprefix("eval/")
    known = list(dict.fromkeys(k for s in settings for k in s.metrics))
    if not known:
        raise RunFolderError(f"{path}: no setting holds a finite metric")
    if key not in known:
        raise ArgumentError("key", key, f"a metric of {path}: one of {', '.join(known)}")
    other = "steps" if x == "guidance" else "guidance"
    series: dict[str, list[tuple[float, float]]] = {}
    for s in settings:
        if key in s.metrics:
            name = f"{s.sampler}, {other} {getattr(s, other):g}"
            series.setdefault(name, []).append((float(getattr(s, x)), s.metrics[key]))
    return line_chart({k: [sorted(v)] for k, v in series.items()},
                      f"{key} against {x}", x_label=x, y_label=key)
