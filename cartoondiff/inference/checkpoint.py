"""Crash-safe checkpoint files: atomic writes and safe loading (a run folder's store of them,
``checkpoints/ckpt-step*.pt``, is ``cartoondiff.runs.folder``'s).

A checkpoint is a plain dict of tensors and Python primitives, so it loads with
``torch.load(weights_only=True)`` and can never run code. Files are written by
``files.write_atomic`` (never half a ``ckpt-*.pt``). Each carries ``FORMAT`` and the version
that wrote it; a file of another format is refused in one line. Loading checks every zip
member's CRC32 first, because ``torch.load`` silently returns flipped bytes inside a tensor.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cartoondiff import __version__
from cartoondiff.runs.errors import UserError
from cartoondiff.runs.files import write_atomic

# Words in torch's weights_only refusals that mean "this pickle wants to build or call
# something", as opposed to "these bytes are not a pickle".
_UNSAFE = re.compile(r"GLOBAL|allowlist|reduce|safe_globals", re.IGNORECASE)

# The layout of the files save_atomic writes. Format 1, cartoondiff 0.1, recorded none.
FORMAT = 2


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be written, read, or applied; the message names the file."""


def save_atomic(state: Mapping[str, Any], path: Path) -> None:
    """Write ``state`` and its ``format`` and ``cartoondiff`` version to ``path`` atomically
    (``files.write_atomic``). Raises CheckpointError (naming ``path``) when the folder cannot
    be written or the disk fills up; the old file at ``path`` and every other checkpoint are
    then left untouched.
    """
    try:
        stamped = {**state, "format": FORMAT, "cartoondiff": __version__}
        write_atomic(path, lambda f: torch.save(stamped, f))
    except (OSError, RuntimeError) as err:
        raise CheckpointError(
            f"could not write checkpoint {path}: {err} (the existing checkpoints are unchanged)"
        ) from err


def load(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint of this version's ``FORMAT`` safely (``read_safely``); clear errors
    naming the file (another format: one line naming the version that wrote it)."""
    path = Path(path)
    state = read_safely(path)
    if state.get("format") == FORMAT:
        return state
    if "format" not in state and "config" not in state:
        raise CheckpointError(f"checkpoint {path} is not a cartoondiff checkpoint (a run's "
                              "checkpoints/ckpt-step*.pt, model_ema.pt or model_best.pt)")
    version, found = state.get("cartoondiff", "0.1"), state.get("format", 1)
    raise CheckpointError(f"checkpoint {path} was written by cartoondiff {version} (checkpoint "
                          f"format {found}); this version reads format {FORMAT}: train it again")


def read_safely(path: Path | str, what: str = "checkpoint") -> dict[str, Any]:
    """The dict in a file ``torch.save`` wrote, loaded onto the CPU with ``weights_only=True``
    (it cannot run code) after checking every zip member's CRC32. Any fault is one
    CheckpointError naming the file (``what`` says what it should be); torch's warnings and its
    advice to load with ``weights_only=False`` (which would run the file's code) are left out."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} {path} is truncated or corrupt: the file is empty")
    if zipfile.is_zipfile(path):  # else truncated, or the legacy format: torch.load reports it
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()  # every member's CRC32, which torch.load does not check
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            raise CheckpointError(f"{what} {path} is truncated or corrupt: {err}") from err
        if bad is not None:
            raise CheckpointError(f"{what} {path} is corrupt: {bad} fails its CRC32 check")
    try:
        with warnings.catch_warnings():  # e.g. a raw pickle's protocol warning
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _reason(err)
        if _UNSAFE.search(reason):
            raise CheckpointError(
                f"refusing to load {path}: it holds objects other than tensors and plain data "
                f"(loading it could run code): {reason}"
            ) from err
        raise CheckpointError(f"{what} {path} is truncated or corrupt: {reason}") from err
    except Exception as err:  # any other failure to parse the bytes means they are damaged
        raise CheckpointError(
            f"{what} {path} is truncated or corrupt: {type(err).__name__}: {_reason(err)}"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{what} {path} does not hold a dict (got {type(state).__name__})")
    return state


def _reason(err: BaseException) -> str:
    """The informative sentence of a torch.load error (the rest is generic advice)."""
    text = str(err)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)  # the unpickler's own words
    if found:
        line = found.group(1)
    else:
        generic = ("Weights only load failed", "Please file an issue", "Check the documentation",
                   "(1)", "(2)")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        specific = [ln for ln in lines if not ln.startswith(generic)]
        line = (specific or lines or [repr(err)])[0]
    return line.strip().split(". ")[0]


def apply_state_dict(
    module: nn.Module, state: Mapping[str, torch.Tensor], source: Path | str, note: str = ""
) -> None:
    """``module.load_state_dict`` with a readable message when the architectures differ.

    ``note`` is appended to that message (e.g. a resumed run's config changes).
    """
    own = module.state_dict()
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = [f"{what} {_few(items)}" for what, items in (
        ("missing keys", sorted(set(own) - set(state))),
        ("unexpected keys", sorted(set(state) - set(own))), ("shape mismatch", shapes)) if items]
    if parts:
        raise CheckpointError(
            f"checkpoint {source} was saved from a different model configuration: "
            + "; ".join(parts) + (f"; {note}" if note else "")
        )
    module.load_state_dict(state)


def _few(items: list[str], n: int = 4) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return "[" + ", ".join(items[:n]) + "]" + more

