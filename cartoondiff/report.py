"""Tables that compare training runs, grouped by experiment, averaged over seeds.

Each run directory is read from its ``metrics.jsonl`` and ``config.yaml``. Runs with the same
W&B group (the experiment name) are one row; numbers are ``mean ± sd`` over their seeds (sd
only where there are two or more). Columns: the final training loss (the mean of the last
``loss_tail`` fraction of logged losses, so one noisy batch does not decide it) and each key's
last evaluated value, its epoch in the header (``hair_color (last, ep20)``); ``epochs=all``
shows each key at every epoch where it was evaluated instead. Run folders may be given as a
shell glob lists a sweep (``multirun/DATE/TIME/*``): what is not a run is passed over, named.
``final=NAME`` adds each key from ``RUN_DIR/NAME``, the JSON that
``python -m cartoondiff.evaluate ... out=RUN_DIR/NAME`` wrote (its first setting), usually a
larger, less noisy evaluation of the final EMA model. Prints a Markdown table
(docs/results.md is built from these).
"""

from __future__ import annotations

import logging
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cartoondiff.runs import cli
from cartoondiff.runs.errors import is_int, require
from cartoondiff.runs.files import check_output, write_text_atomic
from cartoondiff.runs.folder import RunFolder
from cartoondiff.runs.naming import run_title
from cartoondiff.runs.records import (
    RunFolderError,
    metric_value,
    number,
    read_evaluation,
    read_run_config,
    read_run_metrics,
    run_folders,
    shown,
)

log = logging.getLogger(__name__)

FINAL_NAME = re.compile(r"[A-Za-z0-9][\w.+-]{0,99}\.json")  # inside the run folder
DEFAULT_KEYS = ("eval/faithfulness_mean", "eval/hair_color", "eval/frechet_classifier")


@dataclass
class RunSummary:
    """What one run directory logged: its group, seed, losses and evaluations by step."""

    group: str
    seed: int | None
    losses: list[tuple[int, float]] = field(default_factory=list)
    evals: dict[int, dict[str, float]] = field(default_factory=dict)
    steps_per_epoch: float | None = None
    final: dict[str, float] = field(default_factory=dict)

    def final_loss(self, tail: float) -> float:
        values = [v for _, v in self.losses]
        return statistics.fmean(values[-max(1, round(len(values) * tail)):])


def summarize_run(run_dir: Path, final: str | None = None) -> RunSummary:
    """Read one run directory (and its ``final`` evaluation JSON); errors name the file."""
    rows = read_run_metrics(run_dir)
    config = read_run_config(run_dir)  # a damaged one is named once, then ignored
    seed = config.get("seed")
    run = RunSummary(group=run_title(run_dir, config), seed=seed if is_int(seed) else None)
    metrics_path = RunFolder(run_dir).metrics
    for row in rows:  # a value that is not a finite number is skipped, naming file and step
        step = row["step"]
        if metric_value(step) is None:
            log.warning("%s step %s: too large; row skipped", metrics_path, shown(step))
            continue
        values = {k: metric_value(v) for k, v in row.items()
                  if k in ("train/loss", "train/epoch") or k.startswith("eval/")}
        bad = [k for k, v in values.items() if v is None]
        if bad:
            log.warning("%s step %d: %s not a finite number; skipped", metrics_path, step,
                        ", ".join(f"{k}={shown(row[k])}" for k in bad))
        if values.get("train/loss") is not None:
            run.losses.append((step, values["train/loss"]))
            if values.get("train/epoch"):
                run.steps_per_epoch = step / values["train/epoch"]
        evals = {k: v for k, v in values.items() if k.startswith("eval/") and v is not None}
        if evals:
            run.evals.setdefault(step, {}).update(evals)
    if not run.losses:
        raise RunFolderError(f"{metrics_path}: no finite train/loss (is this a run folder?)")
    if final and (run_dir / final).exists():  # not evaluated yet: its cells show "-"
        first = read_evaluation(run_dir / final).settings[0]
        if first.index == 0:  # a damaged first setting (named) shows "-"
            run.final = {f"eval/{k}": v for k, v in first.metrics.items()}
    return run


def mean_sd(values: Sequence[float], digits: int = 3) -> str:
    """``0.412 ± 0.013`` (sample standard deviation), or just the mean for one value."""
    sd = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.{digits}f}{sd}"


def metric_cell(key: str, values: Sequence[float]) -> str:
    """Distances are large numbers (no decimals); accuracies get three."""
    return mean_sd(values, 0 if "frechet" in key else 3) if values else "-"


def _cell(text: str) -> str:
    """A name read from a run folder as one Markdown cell: no line breaks, ``|`` escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def last_evaluated(run: RunSummary, key: str) -> tuple[int, float] | None:
    """(step, value) of ``key``'s last evaluation in ``run``; None when it has none."""
    return max(((s, ev[key]) for s, ev in run.evals.items() if key in ev), default=None)


def comparison_table(runs: Sequence[RunSummary], keys: Sequence[str], loss_tail: float,
                     epochs: str) -> str:
    """A Markdown table: one row per group, the final loss, each key's last evaluated value
    (``key (last, epN)``: evaluated after N epochs; a cell names its epochs where the runs
    differ) or, with ``epochs="all"``, a ``key epN`` column per evaluated epoch, then
    ``key final`` columns; cells are mean ± sd over seeds."""
    groups: dict[str, list[RunSummary]] = defaultdict(list)
    for run in runs:
        groups[run.group].append(run)
    steps = sorted({s for run in runs for s, ev in run.evals.items() if set(keys) & set(ev)})
    per_epoch = next((r.steps_per_epoch for r in runs if r.steps_per_epoch), None)

    def when(step: int) -> str:
        return f"ep{step / per_epoch:.0f}" if per_epoch else f"step {step}"

    def last_steps(members: Sequence[RunSummary], key: str) -> list[int]:
        return sorted({p[0] for r in members if (p := last_evaluated(r, key))})

    evaluated = keys if steps else []
    last_at = {key: last_steps(runs, key) for key in evaluated}  # one step: in the header
    header = ["experiment", "seeds", "final loss"]
    for key in evaluated:
        name = key.removeprefix("eval/")
        if epochs == "all":
            header += [f"{name} {when(s)}" for s in steps]
        else:
            at = last_at[key]
            header.append(f"{name} (last, {when(at[0])})" if len(at) == 1 else f"{name} (last)")
    finals = [key for key in keys if any(key in r.final for r in runs)]
    header += [f"{k.removeprefix('eval/')} final" for k in finals]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group, members in groups.items():
        seeds = ",".join("-" if r.seed is None else str(r.seed) for r in members)
        cells = [_cell(group), seeds, mean_sd([r.final_loss(loss_tail) for r in members], 4)]
        for key in evaluated:
            if epochs == "all":
                cells += [metric_cell(key, [r.evals[s][key] for r in members
                                            if key in r.evals.get(s, {})]) for s in steps]
                continue
            cell = metric_cell(key, [p[1] for r in members if (p := last_evaluated(r, key))])
            if len(last_at[key]) > 1 and cell != "-":  # the header names no single epoch
                cell += f" ({', '.join(map(when, last_steps(members, key)))})"
            cells.append(cell)
        cells += [metric_cell(key, [r.final[key] for r in members if key in r.final])
                  for key in finals]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


USAGE = ("python -m cartoondiff.report RUN_DIR ... [keys=...] [epochs=last] [loss_tail=0.2] "
         "[final=eval.json] [out=table.md]")
EXAMPLE = ("python -m cartoondiff.report multirun/DATE/TIME/* keys=hair_color,faithfulness_mean "
           "out=table.md")
OPTIONS = {
    "keys": cli.Option(",".join(DEFAULT_KEYS), "logged evaluation keys, comma-separated (the "
                       "eval/ prefix may be left off)"),
    "epochs": cli.Option("last", "last: each key's last evaluated value (the header names its "
                         "epoch); all: a column per key per evaluated epoch"),
    "loss_tail": cli.Option(0.2, "the final loss is the mean of this last fraction of the "
                            "logged losses"),
    "out": cli.Option(None, "also write the Markdown table to this file; null: print only"),
    "final": cli.Option(None, "NAME of an evaluate JSON in each run folder (RUN_DIR/NAME) "
                        "whose first setting adds final columns; null: none"),
}


def check_options(opts: dict, runs: Sequence[str]) -> Path | None:
    """Every option checked before any run folder is read; returns the ``out`` path, which is
    none of the ``runs`` folders' records nor their ``final`` JSONs."""
    tail, keys, final = number(opts["loss_tail"]), opts["keys"], opts["final"]
    require(tail is not None and 0 < tail <= 1, "loss_tail", opts["loss_tail"],
            "a fraction in (0, 1] of the logged losses")
    require(opts["epochs"] in ("last", "all"), "epochs", opts["epochs"], "last or all")
    require(isinstance(keys, str) and all(k.strip() for k in keys.split(",")), "keys", keys,
            "comma-separated metric names, e.g. hair_color,faithfulness_mean")
    require(final is None or (isinstance(final, str) and FINAL_NAME.fullmatch(final) is not None),
            "final", final, "the plain file name of an evaluation JSON in each run folder, "
            "e.g. eval.json")
    finals = [Path(run) / final for run in runs] if final else []
    return None if opts["out"] is None else check_output("out", str(opts["out"]),
                                                         inputs=[*runs, *finals])


def main(argv: Sequence[str]) -> str:
    args = cli.parse(argv, OPTIONS, USAGE, about=__doc__, example=EXAMPLE)
    opts = args.options
    if not args.positional:
        raise cli.UsageError(f"no run folders given (usage: {USAGE})")
    out = check_options(opts, args.positional)
    dirs = run_folders(args.positional)  # a sweep's glob; one folder given twice is one run
    keys = [k if k.startswith("eval/") else f"eval/{k}" for k in str(opts["keys"]).split(",")]
    table = comparison_table([summarize_run(d, opts["final"]) for d in dirs], keys,
                             float(opts["loss_tail"]), opts["epochs"])
    if out is not None:
        write_text_atomic(out, table + "\n")
    print(table)
    return table


def console() -> None:
    """Console script ``cartoondiff-report``."""
    cli.execute(main)


if __name__ == "__main__":
    console()
