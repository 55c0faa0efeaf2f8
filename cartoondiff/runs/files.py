"""The one atomic writer (afterwards a file is either its old self or the whole new one),
the one lock, and the check of an output path before any work.

Every file a run or a command keeps goes through ``write_atomic``: checkpoints and exports
(``inference.checkpoint.save_atomic``), sample grids and their captions, the W&B id file,
``config.yaml``, the cut metrics file on resume, and each command's ``out=``. A temporary
name in the same folder, fsync, rename, fsync of the folder: a crash mid-write leaves at
worst a stray ``NAME.<random>.tmp`` (removed by the next write of NAME), never half a file
under the real name, so a damaged by-product cannot block the next run.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import io
import os
import stat
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from filelock import FileLock, Timeout

if TYPE_CHECKING:
    from PIL import Image

from cartoondiff.runs.errors import ArgumentError, UserError


class WriteError(UserError, OSError):
    """A file that could not be written; the message names it (the old file is unchanged)."""


class ReadError(UserError, OSError):
    """A file that could not be read, or is not a regular file; the message names it."""


def special_kind(path: Path) -> str | None:
    """What is at ``path`` when it is there but not a regular file ("a FIFO", "a symlink", "a
    folder", ...); None for a regular file or nothing at all. A symlink is not followed."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    kinds = ((stat.S_ISREG, None), (stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a folder"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))
    return next((kind for test, kind in kinds if test(mode)), "a device")


def read_regular(path: Path | str, what: str = "file") -> bytes:
    """The bytes of the regular file ``path`` (a symlink to one is followed); ``what`` names
    it in errors ("label file"). Anything else is refused without blocking (a FIFO with no
    writer would hang a plain read): ReadError naming the file and what is wrong with it."""
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    try:  # opened without blocking, then checked: what is there may not be a regular file
        with open(path, "rb", opener=lambda name, flags: os.open(name, flags | nonblocking)) as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ReadError(f"{path}: not a regular file (a FIFO, socket or device)")
            return f.read()
    except ReadError:
        raise
    except FileNotFoundError:
        broken = " (broken symlink)" if os.path.islink(path) else ""
        raise ReadError(f"{path}: {what} missing{broken}") from None
    except IsADirectoryError:  # open() refuses a folder itself
        raise ReadError(f"{path}: is a directory, not a {what}") from None
    except OSError as err:
        why = "symlink loop" if err.errno == errno.ELOOP else err.strerror or err
        raise ReadError(f"{path}: cannot read {what} ({why})") from None


class ImageError(ReadError):
    """A file that does not decode as an image; the message names it."""


def decode_image(path: Path | str, what: str = "image file") -> Image.Image:
    """The image in the regular file ``path``, decoded now (so a truncated file fails here)
    and refused when it is large enough to be a decompression bomb (Pillow only warns
    between MAX_IMAGE_PIXELS and twice that: refused too). ReadError or ImageError naming
    the file otherwise. Every image a command reads goes through here."""
    from PIL import Image

    data = read_regular(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
            return image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{path}: refused as a possible decompression bomb ({err})") from None
    except Exception as err:  # Pillow's parsers raise many types on malformed data
        raise ImageError(f"{path}: unreadable or truncated image ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``.

    Raises what ``write`` or the file system raised (the temporary file removed, ``path``
    untouched); ``write_text_atomic`` and ``save_image_atomic`` turn that into one line.
    Something at ``path`` that is not a regular file (a device, a FIFO, a symlink) is never
    replaced: WriteError.
    """
    path = Path(path)
    if kind := special_kind(path):
        raise WriteError(f"{path} is {kind}, not a regular file: refusing to replace it")
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
        with contextlib.suppress(OSError):  # the rename made durable; not every platform
            fd = os.open(path.parent, os.O_RDONLY)  # can open a folder
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:  # Ctrl-C included: never leave the temporary file behind
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _write_named(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """``write_atomic``; its failure becomes a WriteError naming ``path``."""
    try:
        write_atomic(Path(path), write)
    except WriteError:
        raise
    except OSError as err:
        raise WriteError(f"could not write {path}: {err.strerror or err}") from err
    return Path(path)


def write_text_atomic(path: Path, text: str) -> Path:
    """``path.write_text(text)`` (UTF-8), atomically; WriteError naming ``path`` on failure."""
    data = text.encode("utf-8")
    return _write_named(path, lambda f: f.write(data))


def save_image_atomic(image: Any, path: Path) -> Path:
    """A PIL image saved to ``path`` (format from the suffix), atomically; WriteError naming
    ``path`` on failure."""
    from PIL import Image

    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None:
        raise WriteError(f"could not write {path}: not an image file name (.png, .jpg, ...)")
    return _write_named(path, lambda f: image.save(f, format=fmt))


def try_lock(path: Path) -> FileLock | None:
    """An exclusive lock on the file ``path`` (created if missing), held until ``release()``
    or the process ends, however it ends (the kernel drops it: a crash never leaves it
    held); None when another process holds it. ``filelock``: flock on POSIX, Windows' own
    locks there."""
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return None
    return lock


def check_folder(key: str, folder: Path | str) -> Path:
    """A folder of option ``key`` that a command will write into, checked before any work:
    it exists and is writable, or the nearest folder above it that exists is writable.
    ArgumentError naming ``key`` otherwise ("X is not writable", "X is a file")."""
    folder = Path(str(folder)).expanduser()
    if problem := _unwritable(folder, "a folder"):
        raise ArgumentError(key, str(folder), problem)
    return folder


def _unwritable(folder: Path, what: str) -> str | None:
    """Why nothing can be created in ``folder`` (as "expected ..." text), or None."""
    nearest = folder
    while not nearest.exists() and nearest != nearest.parent:  # what must create the rest
        nearest = nearest.parent
    if not nearest.is_dir():
        return f"{what}: {nearest} is a file"
    if not os.access(nearest, os.W_OK | os.X_OK):
        return f"{what} that can be written: {nearest} is not writable"
    return None


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # an image out= (sample, figures)


def check_output(key: str, path: Path | str, suffixes: tuple[str, ...] = (),
                 given: object = None, inputs: Sequence[Path | str] = ()) -> Path:
    """The output path of option ``key``, checked before any work: its suffix is one of
    ``suffixes`` (when given); it is a new name or a regular file (never a folder, a device,
    a FIFO or a symlink, which a write would replace); its folder is writable or can be
    created; and it is none of the command's ``inputs`` (files, or run folders whose record
    it would overwrite: ``RunFolder.holds``). Raises ``ArgumentError`` naming ``key`` (with
    ``given``, the value the user typed, when ``path`` is a file inside it)."""
    from cartoondiff.runs.folder import RunFolder

    path = Path(str(path)).expanduser()
    shown = str(path) if given is None else str(given)
    if suffixes and path.suffix.lower() not in suffixes:
        ends = suffixes[0] if len(suffixes) == 1 else f"one of {suffixes}"
        raise ArgumentError(key, shown, f"a path ending in {ends}")
    if kind := special_kind(path):
        raise ArgumentError(key, shown, f"a new file or a regular one: it is {kind}")
    if problem := _unwritable(path.parent, "a path inside a folder"):
        raise ArgumentError(key, shown, problem)
    if path.exists() and not os.access(path, os.W_OK):
        raise ArgumentError(key, shown, f"a writable path: {path} is not writable")
    for item in map(Path, inputs):
        if path.resolve() == item.expanduser().resolve():
            raise ArgumentError(key, shown, f"a file apart from what the command reads: it "
                                f"is {item}")
        if RunFolder(item).holds(path):
            raise ArgumentError(key, shown, f"a file apart from what the command reads: it "
                                f"is part of the run record in {item}")
    return path
