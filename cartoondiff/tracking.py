"""Experiment tracking: Weights & Biases (offline by default) plus a local JSONL metrics file.

The JSONL file (``metrics.jsonl`` in the run directory) is always written, so every number
is readable without W&B. W&B never fails a run: ``online`` without a network falls back to
``offline`` with one warning, and ``disabled`` skips it entirely.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cartoondiff.errors import ArgumentError, UserError

log = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")
WANDB_HOST = ("api.wandb.ai", 443)


class RunFolderError(UserError, FileNotFoundError):
    """A folder given as a run folder that lacks what a run writes; the message names it."""


def network_reachable(address: tuple[str, int] = WANDB_HOST, timeout: float = 3.0) -> bool:
    """True when a TCP connection to the W&B API opens within ``timeout`` seconds."""
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


class Tracker:
    """Logs scalars and images to ``run_dir/metrics.jsonl`` and to a W&B run.

    On resume (``resume_step`` set) rows logged after that step by the interrupted process
    are dropped from the JSONL file, so the file reads as one uninterrupted run; so is a
    last line cut short by a crash.
    """

    def __init__(
        self,
        run_dir: Path,
        mode: str,
        project: str,
        config: Mapping[str, Any],
        name: str | None = None,
        group: str | None = None,
        tags: Sequence[str] = (),
        entity: str | None = None,
        resume_step: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ArgumentError("mode", mode, f"one of {MODES}")
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._truncate_after(resume_step)
        self._file = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115
        self.wandb = None
        if mode != "disabled":
            self.wandb = self._init_wandb(mode, project, config, name, group, tags, entity)

    def _truncate_after(self, step: int | None) -> None:
        if step is None or not self.metrics_path.exists():
            if step is None:
                self.metrics_path.unlink(missing_ok=True)
            return
        kept = [json.dumps(row) for row in _rows(self.metrics_path) if row.get("step", 0) <= step]
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(row + "\n" for row in kept), encoding="utf-8")
        os.replace(tmp, self.metrics_path)

    def _init_wandb(self, mode, project, config, name, group, tags, entity):  # noqa: ANN001
        import wandb

        sync_hint = f"upload later: wandb sync {self.run_dir / 'wandb'}"
        if mode == "online" and not network_reachable():
            log.warning("W&B: no network, logging offline instead (%s)", sync_hint)
            mode = "offline"
        id_file = self.run_dir / "wandb_id.txt"
        # W&B run ids are short lowercase alphanumerics; the same id on resume continues the run.
        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
        id_file.write_text(run_id)

        def init(mode: str):  # noqa: ANN202
            return wandb.init(
                project=project, entity=entity, name=name, group=group, tags=list(tags),
                config=dict(config), dir=str(self.run_dir), mode=mode, id=run_id,
                resume="allow", reinit="finish_previous",
                settings=wandb.Settings(silent=True, init_timeout=60),
            )

        if mode != "online":
            return init(mode)
        try:
            return init("online")
        except Exception as err:  # no login, server down, timeout: W&B never fails a run
            log.warning("W&B: online init failed (%s), logging offline instead (%s)",
                        str(err).splitlines()[0] if str(err) else type(err).__name__, sync_hint)
            return init("offline")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Append one row ``{"step": step, **metrics}`` to the JSONL file and to W&B."""
        self._write({"step": step, **{k: _plain(v) for k, v in metrics.items()}})
        if self.wandb is not None:
            self.wandb.log(dict(metrics), step=step)

    def _write(self, row: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def log_image(self, key: str, path: Path, step: int, caption: str = "",
                  rows: Sequence[str] = ()) -> None:
        """Log a saved PNG (a sample grid) to W&B, with a table naming each row's attributes."""
        self._write({"step": step, f"{key}_path": str(path)})
        if self.wandb is None:
            return
        import wandb

        media: dict[str, Any] = {key: wandb.Image(str(path), caption=caption)}
        if rows:
            media[f"{key}_rows"] = wandb.Table(
                columns=["row", "attributes"], data=[[i, r] for i, r in enumerate(rows)]
            )
        self.wandb.log(media, step=step)

    def summary(self, values: Mapping[str, Any]) -> None:
        if self.wandb is not None:
            self.wandb.summary.update(dict(values))

    def finish(self) -> None:
        self._file.close()
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` file (a last line cut short by a crash is left out)."""
    return _rows(Path(path))


def read_run_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run folder's metrics.jsonl; the error names the folder."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise RunFolderError(f"{run_dir}: no metrics.jsonl (is this a run folder?)")
    return read_metrics(path)


def _rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if line.strip():
                log.warning("%s: skipping a damaged line %r", path, line[:80])
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


class NullTracker:
    """Stands in for ``Tracker`` on processes that must not log (DDP ranks other than 0)."""

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_image(self, key: str, path: Path, step: int, caption: str = "",
                  rows: Sequence[str] = ()) -> None:
        pass

    def summary(self, values: Mapping[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass
