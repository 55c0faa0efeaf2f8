"""The one atomic writer: afterwards a file is either its old self or the whole new one.

Every file a run or a command keeps goes through ``write_atomic``: checkpoints and exports
(``inference.checkpoint.save_atomic``), sample grids and their captions, the W&B id file,
``config.yaml``, the cut metrics file on resume, and each command's ``out=``. A temporary
name in the same folder, fsync, rename, fsync of the folder: a crash mid-write leaves at
worst a stray ``NAME.<random>.tmp`` (removed by the next write of NAME), never half a file
under the real name, so a damaged by-product cannot block the next run.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from cartoondiff.runs.errors import UserError


class WriteError(UserError, OSError):
    """A file that could not be written; the message names it (the old file is unchanged)."""


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``.

    Raises what ``write`` or the file system raised (the temporary file removed, ``path``
    untouched); ``write_bytes_atomic`` and ``write_text_atomic`` turn that into one line.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(glob.escape(path.name) + ".*.tmp"):
            stale.unlink(missing_ok=True)  # left by a process killed mid-write
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; run files are shared
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    finally:  # Ctrl-C included: never leave the temporary file behind
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """``path.write_bytes(data)``, atomically; WriteError naming ``path`` on failure."""
    try:
        write_atomic(Path(path), lambda f: f.write(data))
    except OSError as err:
        raise WriteError(f"could not write {path}: {err.strerror or err}") from err
    return Path(path)


def write_text_atomic(path: Path, text: str) -> Path:
    """``path.write_text(text)`` (UTF-8), atomically; WriteError naming ``path`` on failure."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def save_image_atomic(image: Any, path: Path) -> Path:
    """A PIL image saved to ``path`` (format from the suffix), atomically; WriteError naming
    ``path`` on failure."""
    from PIL import Image

    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None:
        raise WriteError(f"could not write {path}: not an image file name (.png, .jpg, ...)")
    try:
        write_atomic(Path(path), lambda f: image.save(f, format=fmt))
    except OSError as err:
        raise WriteError(f"could not write {path}: {err.strerror or err}") from err
    return Path(path)


def fsync_dir(folder: Path) -> None:
    """Make a rename itself durable (a power cut could otherwise undo it)."""
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_output(key: str, path: Path | str, suffixes: tuple[str, ...] = (),
                 given: object = None) -> Path:
    """The output path of option ``key``, checked before any work: its suffix is one of
    ``suffixes`` (when given), it is not a folder, and its folder exists and is writable or
    can be created. Raises ``ArgumentError`` naming ``key`` (with ``given``, the value the
    user typed, when ``path`` is a file inside it)."""
    from cartoondiff.runs.errors import ArgumentError

    path = Path(str(path)).expanduser()
    shown = str(path) if given is None else str(given)
    if suffixes and path.suffix.lower() not in suffixes:
        ends = suffixes[0] if len(suffixes) == 1 else f"one of {suffixes}"
        raise ArgumentError(key, shown, f"a path ending in {ends}")
    if path.is_dir():
        raise ArgumentError(key, shown, "a file path: it is an existing folder")
    folder = path.parent
    while not folder.exists():  # the nearest folder that exists must let us create the rest
        folder = folder.parent
    if not folder.is_dir():
        raise ArgumentError(key, shown, f"a path inside a folder: {folder} is a file")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists()
                                                     and not os.access(path, os.W_OK)):
        raise ArgumentError(key, shown, f"a writable path: {folder} is not writable")
    return path
