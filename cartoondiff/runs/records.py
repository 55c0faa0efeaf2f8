"""Reading a run folder back: its metrics rows, config and grids, as untrusted input.

Every reader of runs (the W&B replay of a resume, ``figures``, ``report``) goes through these:
a damaged row, config, image or evaluation is named in one line (a warning, or
``RunFolderError``) and never becomes a traceback; the folder's file names come from its
owner, ``runs.folder``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from cartoondiff.runs.errors import UserError, first_line, is_int, is_number
from cartoondiff.runs.files import ImageError, ReadError, decode_image, read_regular
from cartoondiff.runs.folder import RunFolder

log = logging.getLogger(__name__)


class RunFolderError(UserError, FileNotFoundError):
    """A folder given as a run folder that lacks what a run writes; the message names it."""


def open_image(path: Path) -> Image.Image:
    """A PNG a run wrote, decoded and checked (``files.decode_image``); RunFolderError naming
    it when a check fails."""
    try:
        return decode_image(path, "sample grid")
    except ImageError as err:
        reason = str(err).removeprefix(f"{path}: ")
        raise RunFolderError(f"{path} is damaged or not a sample grid ({reason})") from None
    except ReadError as err:
        raise RunFolderError(str(err)) from None


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """A run folder's config.yaml as a plain dict; {} with a warning naming the file when it
    is not a readable YAML mapping (the readers then fall back to the folder's name)."""
    from omegaconf import OmegaConf

    path = RunFolder(run_dir).config
    if not path.exists():
        return {}
    try:
        config = OmegaConf.to_container(OmegaConf.create(read_text(path)), resolve=False)
        if not isinstance(config, dict):
            raise ValueError(f"a {type(config).__name__}, not a mapping")
    except Exception as err:  # bad YAML, a list, an unreadable or special file
        log.warning("%s is not a readable run config (%s); ignoring it", path, first_line(err))
        return {}
    return config


def number(value: Any) -> float | None:
    """A logged value as a finite float, or None (a string, a list, NaN, inf, a bool, an int
    too large for a float)."""
    return float(value) if is_number(value) else None


LARGEST = 1e300  # a metric larger than this in size: its mean, spread or axis limits overflow


def metric_value(value: Any) -> float | None:
    """A logged metric as a float that tables and charts can average and draw: ``number``,
    and at most ``LARGEST`` in size; None otherwise (1.7e308 as well as 1e999 or "abc")."""
    value = number(value)
    return value if value is not None and abs(value) <= LARGEST else None


def shown(value: Any) -> str:
    """A damaged value as a warning shows it: its repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def run_folders(paths: Sequence[Path | str]) -> list[Path]:
    """The run folders among ``paths`` as a shell glob lists them (``multirun/DATE/TIME/*``),
    each once (the same folder given twice, by another spelling or a symlink, is one run, not
    two seeds: named in a warning). Among two or more paths, an existing file or folder that
    holds nothing a run writes (``multirun.yaml``, a log, ``.submitit``) is passed over with
    a warning naming it. A path given alone, a missing one and a folder holding part of a
    run's record are kept, so that reading it names what is wrong; none left is an error."""
    given = [Path(p) for p in paths]
    if len(given) < 2:
        return given
    kept = [p for p in given if not p.exists() or RunFolder(p).earlier_record()]
    for path in sorted(set(given) - set(kept), key=given.index):
        log.warning("%s is not a run folder: passed over", path)
    if not kept:
        raise RunFolderError(f"none of the {len(given)} paths given is a run folder (one "
                             f"holds {RunFolder.METRICS}): {', '.join(map(str, given))}")
    distinct: dict[Path, Path] = {}  # resolved -> as given first
    for folder in kept:
        if (first := distinct.setdefault(folder.resolve(), folder)) is not folder:
            log.warning("%s is the same folder as %s: counted once", folder, first)
    return list(distinct.values())


def read_text(path: Path) -> str:
    """A run folder's text file (UTF-8, undecodable bytes replaced), only if it is a regular
    file; RunFolderError naming it otherwise."""
    try:
        return read_regular(path).decode("utf-8", errors="replace")
    except ReadError as err:
        raise RunFolderError(str(err)) from None


def _json(text: str) -> tuple[Any, str]:
    """``text`` as JSON and ""; or None and why it is not JSON."""
    try:
        return json.loads(text), ""
    except ValueError as err:  # JSONDecodeError, or a number JSON cannot hold
        return None, f"not JSON: {first_line(err)}"
    except RecursionError:  # nested deeper than the parser goes
        return None, "nested too deeply"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` file (a last line cut short by a crash is left out)."""
    return read_rows(Path(path))[0]


def read_run_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run folder's metrics.jsonl; the error names the folder."""
    path = RunFolder(run_dir).metrics
    if not path.is_file():
        raise RunFolderError(f"{run_dir}: no metrics.jsonl (is this a run folder?)")
    return read_metrics(path)


def read_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of a metrics file (each a JSON object with an integer ``step`` >= 0) and its
    damaged lines, each named in a warning with its line number; OSError names the file."""
    rows, damaged = [], []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        row, problem = _json(line)
        if not problem and not isinstance(row, dict):
            problem = "not a JSON object"
        elif not problem and not (is_int(row.get("step")) and row["step"] >= 0):
            problem = "no integer step >= 0"
        if problem:
            log.warning("%s line %d: skipping a damaged row (%s): %r", path, number, problem,
                        line[:80])
            damaged.append(line)
        else:
            rows.append(row)
    return rows, damaged


@dataclass(frozen=True)
class Setting:
    """One evaluated setting of an evaluation JSON: its place among the file's ``runs``, its
    sampler and the finite numbers among its metrics."""

    index: int
    sampler: str
    steps: int
    guidance: float
    metrics: dict[str, float]


@dataclass(frozen=True)
class Evaluation:
    """What the figures and the report read of an evaluation JSON."""

    settings: list[Setting]
    n: int | None  # samples per setting
    chance: dict[str, float]  # per attribute
    ceiling: dict[str, float]  # the judge's accuracy on held-out real avatars


def read_evaluation(path: Path) -> Evaluation:
    """The JSON ``python -m cartoondiff.evaluate ... out=PATH`` wrote, as untrusted input: a
    setting without a sampler, steps, guidance or metrics and a value that is not a finite
    number are skipped, each named in a warning (a null, written for NaN, silently).
    RunFolderError naming the file when it is not a regular file, not an evaluation JSON or
    holds no usable setting."""
    result, problem = _json(read_text(path))
    if problem or not isinstance(result, dict) or not isinstance(result.get("runs"), list):
        raise RunFolderError(f"{path}: not an evaluation JSON ({problem or 'no list of runs'})")
    settings = []
    for i, run in enumerate(result["runs"]):
        where = f"{path} setting {i}"
        if problem := _setting_problem(run):
            log.warning("%s: %s; skipped", where, problem)
            continue
        settings.append(Setting(i, run["sampler"], run["steps"], float(run["guidance"]),
                                _numbers(run["metrics"], f"{where}: metrics")))
    if not settings:
        raise RunFolderError(f"{path}: not an evaluation JSON (no usable setting among its "
                             f"{len(result['runs'])} runs)")
    judge = result.get("classifier", {})
    return Evaluation(settings, result["n"] if is_int(result.get("n")) else None,
                      _numbers(result.get("chance", {}), f"{path}: chance"),
                      _numbers(judge.get("accuracy", {}) if isinstance(judge, dict) else judge,
                               f"{path}: classifier.accuracy"))


def _setting_problem(run: Any) -> str:
    """What makes one of an evaluation's ``runs`` unusable; "" when nothing does."""
    if not isinstance(run, dict):
        return "not a JSON object"
    steps = run.get("steps")
    checks = ((isinstance(run.get("sampler"), str), "no sampler name"),
              (is_int(steps) and metric_value(steps) is not None and steps >= 1,
               f"steps={shown(steps)} is not an integer >= 1"),
              (metric_value(run.get("guidance")) is not None,
               f"guidance={shown(run.get('guidance'))} is not a finite number"),
              (isinstance(run.get("metrics"), dict), "no metrics mapping"))
    return next((problem for ok, problem in checks if not ok), "")


def _numbers(values: Any, where: str) -> dict[str, float]:
    """The finite numbers of the mapping ``values``; what else it holds is named in a warning
    (a null, which the evaluation writes for NaN, silently)."""
    if not isinstance(values, dict):
        log.warning("%s is not a mapping of numbers; ignored", where)
        return {}
    bad = [k for k, v in values.items() if v is not None and metric_value(v) is None]
    if bad:
        log.warning("%s: %s not a finite number; skipped", where,
                    ", ".join(f"{k}={shown(values[k])}" for k in bad))
    return {str(k): m for k, v in values.items() if (m := metric_value(v)) is not None}

