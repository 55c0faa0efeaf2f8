"""Reading a run folder back: its metrics rows, config and grids, as untrusted input.

Every reader of runs (the W&B replay of a resume, ``figures``, ``report``) goes through these:
a damaged row, config or image is named in one line (a warning, or ``RunFolderError``) and
never becomes a traceback; the folder's file names come from its owner, ``run_folder``.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from cartoondiff.runs.errors import UserError, is_int, is_number
from cartoondiff.runs.folder import RunFolder

log = logging.getLogger(__name__)


class RunFolderError(UserError, FileNotFoundError):
    """A folder given as a run folder that lacks what a run writes; the message names it."""


def open_image(path: Path) -> Image.Image:
    """A PNG a run wrote, decoded and checked: RunFolderError naming it when it is truncated,
    empty, not an image or large enough to be a decompression bomb."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return image.copy()
    except Exception as err:  # truncated, empty, not an image, too large
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RunFolderError(f"{path} is damaged or not a sample grid ({reason})") from None


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """A run folder's config.yaml as a plain dict; {} with a warning naming the file when it
    is not a readable YAML mapping (the readers then fall back to the folder's name)."""
    from omegaconf import OmegaConf

    path = RunFolder(run_dir).config
    if not path.is_file():
        return {}
    try:
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        if not isinstance(config, dict):
            raise ValueError(f"a {type(config).__name__}, not a mapping")
    except Exception as err:  # bad YAML, a list, an unreadable file
        log.warning("%s is not a readable run config (%s); ignoring it", path,
                    str(err).splitlines()[0] if str(err) else type(err).__name__)
        return {}
    return config


def number(value: Any) -> float | None:
    """A logged value as a finite float, or None (a string, a list, NaN, inf, a bool)."""
    return float(value) if is_number(value) else None


def distinct_folders(folders: Sequence[Path | str]) -> list[Path]:
    """``folders`` without repeats (the same folder given twice, by another spelling or a
    symlink, is one run, not two seeds), each repeat named in a warning."""
    seen: dict[Path, Path] = {}
    for folder in map(Path, folders):
        key = folder.resolve()
        if key in seen:
            log.warning("%s is the same folder as %s: counted once", folder, seen[key])
        else:
            seen[key] = folder
    return list(seen.values())


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
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise RunFolderError(f"{path}: cannot read it ({err.strerror or err})") from None
    rows, damaged = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            problem = ("not a JSON object" if not isinstance(row, dict) else
                       "no integer step >= 0" if not (is_int(row.get("step"))
                                                      and row["step"] >= 0) else "")
        except ValueError as err:  # JSONDecodeError, or a number JSON cannot hold
            problem = f"not JSON ({str(err).splitlines()[0]})"
        if problem:
            log.warning("%s line %d: skipping a damaged row (%s): %r", path, number, problem,
                        line[:80])
            damaged.append(line)
        else:
            rows.append(row)
    return rows, damaged
