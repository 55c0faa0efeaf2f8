"""Experiment tracking: Weights & Biases (offline by default) plus a local JSONL metrics file.

The JSONL file (``metrics.jsonl`` in the run directory) is always written, so every number
is readable without W&B. W&B never fails a run: ``online`` without a network falls back to
``offline`` with one warning, and ``disabled`` skips it entirely.

Evaluation metrics (``eval/*``) are plotted against ``epoch`` and their W&B summary keeps the
best and the last value. A key may have another name in W&B than in the JSONL file (the
report and the figures read that): the caller's ``wandb_name`` gives it (training and
evaluation pass ``evaluate.wandb_name``, which puts the 18 per-attribute accuracies in their
own dashboard section, ``eval/attr/<attribute>``), so this module knows no science. A grid's
rows table is logged once (the rows are fixed for a run: the epoch grids and the final grid
share it), not with every grid.

A resumed run continues the same W&B run id; offline, where W&B cannot append to an earlier
offline run, the new run replays the JSONL file up to the resume step and replaces
the earlier run's folder when it finishes, so ``wandb/`` holds one run with every step.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cartoondiff.runs.errors import first_line, require
from cartoondiff.runs.files import write_text_atomic
from cartoondiff.runs.folder import RunFolder
from cartoondiff.runs.records import RunFolderError, open_image, read_rows, read_text

log = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # W&B refuses empty ids and :;,#?/'"
WANDB_URL = "https://api.wandb.ai"  # W&B's own server; WANDB_BASE_URL names a self-hosted one


def network_reachable(timeout: float = 3.0) -> bool:
    """True when a TCP connection to the W&B server (``$WANDB_BASE_URL``, a self-hosted W&B,
    else W&B's) opens within ``timeout`` seconds."""
    url = urlsplit(os.environ.get("WANDB_BASE_URL") or WANDB_URL)
    try:
        port = url.port or (80 if url.scheme == "http" else 443)
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except (OSError, ValueError):  # no route, no name, or a URL with no usable host or port
        return False


def start_wandb(folder: Path, mode: str, **init_args: Any) -> Any:
    """A W&B run in ``folder/wandb`` (``init_args`` go to ``wandb.init``), or None when ``mode``
    is ``disabled``. W&B never fails a command: ``online`` without a network or a login logs
    ``offline`` instead, and a run W&B cannot start at all (its folder damaged, say) goes on
    without it, each with one warning."""
    require(mode in MODES, "mode", mode, f"one of {MODES}")
    if mode == "disabled":
        return None
    import wandb

    hint = f"upload later: wandb sync {Path(folder) / 'wandb'}"

    def init(mode: str) -> Any:
        return wandb.init(**init_args, dir=str(folder), mode=mode, reinit="finish_previous",
                          settings=wandb.Settings(silent=True, init_timeout=60))

    if mode == "online" and not network_reachable():
        log.warning("W&B: no network, logging offline instead (%s)", hint)
        mode = "offline"
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        try:
            return init(mode)
        except Exception as err:  # no login, server down, timeout
            if mode != "online":
                raise
            log.warning("W&B: online init failed (%s), logging offline instead (%s)",
                        first_line(err), hint)
            return init("offline")
    except Exception as err:  # e.g. wandb/ damaged (a file): go on without W&B
        log.warning("W&B: could not start a run in %s (%s); going on without W&B",
                    Path(folder) / "wandb", first_line(err))
        return None


@dataclass(frozen=True)
class WandbSettings:
    """The ``logger`` config node: how a training run appears in W&B (its keys are explained
    in conf/config.yaml, its modes in docs/wandb.md)."""

    mode: str = "offline"
    project: str = "cartoondiff"
    entity: str | None = None
    name: str | None = None
    group: str | None = None
    tags: Sequence[str] = ()
    job_type: str | None = None
    log_model: bool = False

    def __post_init__(self) -> None:
        require(self.mode in MODES, "mode", self.mode, f"one of {MODES}")
        require(isinstance(self.log_model, bool), "log_model", self.log_model, "true or false")

    def wandb_args(self) -> dict[str, Any]:
        """The arguments of ``wandb.init`` these settings give."""
        return {"project": self.project, "entity": self.entity, "name": self.name,
                "group": self.group, "tags": list(self.tags), "job_type": self.job_type}


class Tracker:
    """Logs scalars and images to ``run_dir/metrics.jsonl`` and to a W&B run.

    ``settings``: the ``logger`` config node; with what ``train`` knows at run time:
    ``run_dir``, ``config``, ``resume_step``, ``eval_summary``, which says for each
    ``eval/*`` metric what its W&B summary keeps: ``"max"``, ``"min"`` or ``"last"``
    (``"max,last"``: both), and ``wandb_name``, a logged key's name in W&B (default: the key).

    On resume (``resume_step`` set) rows logged after that step by the interrupted process
    are dropped from the JSONL file, so the file reads as one uninterrupted run; so is a
    last line cut short by a crash.
    """

    EVAL_PREFIX = "eval/"
    EPOCH = "epoch"  # logged with each evaluation: epochs completed, the x axis of eval/*

    def __init__(
        self,
        run_dir: Path,
        config: Mapping[str, Any],
        settings: WandbSettings | None = None,
        resume_step: int | None = None,
        eval_summary: Callable[[str], str] | None = None,
        wandb_name: Callable[[str], str] | None = None,
    ) -> None:
        settings = settings or WandbSettings()
        self.run_dir = Path(run_dir)
        self.metrics_path = RunFolder(self.run_dir).metrics
        self.log_model_enabled = settings.log_model
        self._eval_summary = eval_summary or (lambda key: "last")  # noqa: ARG005
        self._wandb_name = wandb_name or (lambda key: key)
        self._defined: set[str] = set()
        self._tables: set[tuple[str, ...]] = set()  # rows tables already logged
        self._superseded: list[Path] = []  # earlier offline folders of this run, replayed
        if resume_step is None:  # a new run: what an earlier attempt logged here is not its own
            self.metrics_path.unlink(missing_ok=True)
        elif self.metrics_path.exists():
            self._truncate_after(resume_step)
        self._file = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115
        self.wandb = self._init_wandb(settings.mode, resume_step, config=dict(config),
                                      **settings.wandb_args())

    def _truncate_after(self, step: int) -> None:
        rows, damaged = read_rows(self.metrics_path)
        kept = [json.dumps(row) for row in rows if row["step"] <= step]
        if damaged:  # set aside, not deleted: the file then reads as one clean run
            aside = self.metrics_path.with_name(self.metrics_path.name + ".damaged")
            with open(aside, "a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in damaged))
            log.warning("%s: %d damaged line(s) moved to %s", self.metrics_path, len(damaged),
                        aside)
        write_text_atomic(self.metrics_path, "".join(row + "\n" for row in kept))

    def _init_wandb(self, mode: str, resume_step: int | None, **init_args: Any) -> Any:
        if mode == "disabled":
            return None
        id_file = RunFolder(self.run_dir).wandb_id
        # The same id on resume continues the W&B run. A fresh start gets the id a sweep agent
        # gave it (WANDB_RUN_ID), else a new one: what an earlier attempt logged is not this run.
        resuming = resume_step is not None
        run_id = read_run_id(id_file) if resuming else None
        # W&B names a folder offline-run-TIME-ID, adding -1, -2 ... when TIME repeats
        wandb_dir = RunFolder(self.run_dir).wandb_dir
        earlier = sorted({*wandb_dir.glob(f"offline-run-*-{run_id}"),
                          *wandb_dir.glob(f"offline-run-*-{run_id}-*")}) if run_id else []
        agent_id = os.environ.get("WANDB_RUN_ID", "")
        run_id = run_id or (agent_id if _RUN_ID.match(agent_id) else secrets.token_hex(4))
        write_text_atomic(id_file, run_id)
        os.environ["WANDB_RUN_ID"] = run_id  # W&B takes it over id= (an agent sets it)
        try:
            run = start_wandb(self.run_dir, mode, **init_args, id=run_id, resume="allow")
        finally:
            if agent_id:
                os.environ["WANDB_RUN_ID"] = agent_id
            else:
                os.environ.pop("WANDB_RUN_ID", None)
        if run is None:
            return None
        # Evaluations plot against epochs completed, not optimizer steps.
        run.define_metric(self.EPOCH)
        run.define_metric(f"{self.EVAL_PREFIX}*", step_metric=self.EPOCH)
        if resuming and not run.resumed:
            # W&B started an empty run (offline, or online when the earlier part never
            # reached the server): give it the history up to the resume step.
            self._replay(run, resume_step)
            self._superseded = earlier
        return run

    def _replay(self, run: Any, step: int) -> None:
        """Log the JSONL rows (already cut at the resume step) into a fresh W&B run."""
        for row in read_rows(self.metrics_path)[0]:
            at = row["step"]
            images = [k[: -len("_path")] for k in row if k.endswith("_path")]
            image_keys = {f"{key}_{part}" for key in images for part in ("path", "caption", "rows")}
            for key in images:
                if (path := self._replayable_image(row[f"{key}_path"])) is not None:
                    caption, rows = row.get(f"{key}_caption", ""), row.get(f"{key}_rows", ())
                    self._wandb_image(run, key, path, at, str(caption),
                                      [str(r) for r in rows] if isinstance(rows, list) else [])
            # numbers and text only: a dict could pose as a W&B media object naming any file
            scalars = {k: v for k, v in row.items() if k != "step" and k not in image_keys
                       and isinstance(v, int | float | str)}
            if scalars:
                self._wandb_log(run, scalars, at)
        log.info("W&B: replayed %s up to step %d into run %s", self.metrics_path, step, run.id)

    def _replayable_image(self, recorded: object) -> Path | None:
        """The grid a metrics row names, if it is a readable image inside this run folder
        (the same name under ``samples/`` when the folder was moved); else None, with a
        warning naming it. Replay never reads a file outside the run folder."""
        def inside(path: Path) -> bool:
            return path.resolve().is_relative_to(self.run_dir.resolve())

        path = Path(str(recorded))
        if not (path.is_absolute() and inside(path)):
            path = RunFolder(self.run_dir).samples / path.name
            if not inside(path):
                log.warning("%s: image %s is outside the run folder; not replayed",
                            self.metrics_path, recorded)
                return None
        if not path.is_file():
            return None  # drawn by a step after the resume, or deleted: nothing to replay
        try:
            open_image(path).close()
        except RunFolderError as err:
            log.warning("%s; not replayed to W&B", err)
            return None
        return path

    def _wandb_log(self, run: Any, metrics: Mapping[str, Any], step: int) -> None:
        named = {self._wandb_name(k): v for k, v in metrics.items()}
        for key, logged in zip(metrics, named, strict=True):
            if logged.startswith(self.EVAL_PREFIX) and logged not in self._defined:
                summary = self._eval_summary(key)
                run.define_metric(logged, step_metric=self.EPOCH, summary=summary)
                self._defined.add(logged)
        run.log(named, step=step)

    def _wandb_image(self, run: Any, key: str, path: Path, step: int, caption: str,
                     rows: Sequence[str]) -> None:
        import wandb

        media: dict[str, Any] = {key: wandb.Image(str(path), caption=caption)}
        if rows and tuple(rows) not in self._tables:  # a run's grid rows never change
            media[f"{key}_rows"] = wandb.Table(
                columns=["row", "attributes"], data=[[i, r] for i, r in enumerate(rows)]
            )
            self._tables.add(tuple(rows))
        run.log(media, step=step)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Append one row ``{"step": step, **metrics}`` to the JSONL file and to W&B.

        Log ``eval/*`` metrics together with ``epoch`` (their x axis in W&B)."""
        self._write({"step": step, **{k: _plain(v) for k, v in metrics.items()}})
        if self.wandb is not None:
            self._wandb_log(self.wandb, metrics, step)

    def _write(self, row: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def log_image(self, key: str, path: Path, step: int, caption: str = "",
                  rows: Sequence[str] = ()) -> None:
        """Log a saved PNG (a sample grid) to W&B, with a table naming each row's attributes."""
        self._write({"step": step, f"{key}_path": str(path), f"{key}_caption": caption,
                     f"{key}_rows": list(rows)})
        if self.wandb is not None:
            self._wandb_image(self.wandb, key, path, step, caption, rows)

    def log_model(self, path: Path, metadata: Mapping[str, Any] | None = None,
                  aliases: Sequence[str] = ("latest",)) -> None:
        """With ``log_model``: a model file as a version of the W&B artifact ``model-<run id>``
        (type ``model``) with ``aliases`` (the final EMA export: ``latest``; the best
        evaluated one: ``best``). Offline, it uploads with ``wandb sync``."""
        if self.wandb is None or not self.log_model_enabled:
            return
        import wandb

        artifact = wandb.Artifact(f"model-{self.wandb.id}", type="model",
                                  metadata=dict(metadata or {}))
        artifact.add_file(str(path), name=Path(path).name)
        self.wandb.log_artifact(artifact, aliases=list(aliases))

    def summary(self, values: Mapping[str, Any]) -> None:
        if self.wandb is not None:
            self.wandb.summary.update(dict(values))

    def finish(self) -> None:
        self._file.close()
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None
            for folder in self._superseded:  # everything in them was replayed
                shutil.rmtree(folder, ignore_errors=True)
            self._superseded = []


EVAL_JOB_TYPE = "eval"
SETTING = "setting"  # x axis of an evaluation run's history: one step per sampler setting


def log_evaluation(
    run: Any,
    settings: Sequence[Mapping[str, Any]],
    summary: Callable[[str], str],
    wandb_name: Callable[[str], str],
) -> None:
    """An evaluation's results into its own W&B run (``start_wandb`` with ``job_type=eval``).

    ``settings``: one mapping per evaluated sampler setting, ``{"sampler", "steps",
    "guidance", "eta", "seconds", "metrics": {name: value}}`` (the evaluation JSON's ``runs``).
    Logs one history step per setting (``eval/*`` against ``setting``, each named in W&B by
    ``wandb_name``; ``summary(key)`` says what the run summary keeps over the settings), one
    ``wandb.Table`` with a row per setting, and line plots of faithfulness against guidance (one
    line per sampler and steps) and against steps (one line per sampler and guidance) where more
    than one value was evaluated.
    """
    import wandb

    run.define_metric(SETTING)
    names = list(dict.fromkeys(k for s in settings for k in s["metrics"]))
    for key in names:
        run.define_metric(wandb_name(f"eval/{key}"), step_metric=SETTING,
                          summary=summary(f"eval/{key}"))
    head = ["sampler", "steps", "guidance", "eta", "seconds"]
    rows = []
    for i, s in enumerate(settings):
        metrics = {wandb_name(f"eval/{k}"): v for k, v in s["metrics"].items()}
        run.log({SETTING: i, **{f"setting/{k}": s[k] for k in head}, **metrics}, step=i)
        rows.append([s[k] for k in head] + [s["metrics"].get(k) for k in names])
    media: dict[str, Any] = {"settings": wandb.Table(columns=head + names, data=rows)}
    for x, other in (("guidance", "steps"), ("steps", "guidance")):
        series: dict[str, list[tuple[float, float]]] = {}  # "ddim steps=50" -> [(x, value)]
        for s in settings:
            if (value := s["metrics"].get("faithfulness_mean")) is not None:
                series.setdefault(f"{s['sampler']} {other}={s[other]:g}", []).append(
                    (float(s[x]), float(value)))
        if len({px for pts in series.values() for px, _ in pts}) > 1:
            lines = [sorted(pts) for pts in series.values()]
            media[f"faithfulness_vs_{x}"] = wandb.plot.line_series(
                xs=[[px for px, _ in pts] for pts in lines],
                ys=[[py for _, py in pts] for pts in lines],
                keys=list(series), title=f"faithfulness against {x}", xname=x)
    run.log(media, step=len(settings) - 1)


def read_run_id(id_file: Path) -> str | None:
    """The W&B run id kept in the run folder, or None (with a warning naming the file when
    it is there but empty or damaged: the resumed run then logs to a new W&B run)."""
    if not os.path.lexists(id_file):
        return None
    try:
        run_id = read_text(id_file).strip()
    except RunFolderError as err:  # a FIFO or a device in its place: not read, never waited on
        run_id, problem = "", str(err)
    else:
        problem = "empty" if not run_id else "not a W&B run id"
    if _RUN_ID.match(run_id):
        return run_id
    log.warning("%s is damaged (%s: %r); the resumed run logs to a new W&B run (the earlier "
                "W&B folders are kept)", id_file, problem, run_id[:40])
    return None


def _plain(value: Any) -> Any:
    """A numpy or torch scalar as the Python number JSON can hold; anything else as it is."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


class NullTracker:
    """Stands in for ``Tracker`` on processes that must not log (DDP ranks other than 0)."""

    def _ignore(self, *args: Any, **kwargs: Any) -> None:
        pass

    log = log_image = log_model = summary = finish = _ignore
