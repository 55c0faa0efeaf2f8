"""A decode-once cache of avatar arrays: uint8 images (N, 3, H, W) + attribute ids (N, 18).

Each cache lives in ``cache_dir/<name>-<hash>/`` where the hash covers everything that
changes the arrays (the source, its file list with sizes and mtimes, image size, crop,
labels, or for synthetic data n, seed and renderer version). A changed source or setting
therefore lands in a new folder and never reuses stale arrays.

Writing is crash-safe: the arrays go into a temporary sibling folder, ``meta.json`` is
written last, and the folder is renamed into place in one step. A folder without
``meta.json`` (a crash, a copy in progress) is never read. Temporary folders left by a
build that died are removed once no live process holds their lock.

Nothing read back is trusted: ``meta.json`` records the size and sha256 of each array file
and a sha256 of its own content, and every load checks them, the arrays' dtypes and shapes,
and the attribute ids' ranges. sha256 of a 10k x 3 x 64 x 64 cache (123 MB) costs 0.1-0.3 s
on a busy 2-core CPU (docs/reliability.md), small beside a run that reads every byte anyway. A
cache that fails a check is discarded and rebuilt from its source, with a warning naming
the folder and the reason; ``CacheError`` (naming the folder to delete) is raised only when
it cannot be moved out of the way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
import torch

from cartoondiff import attributes
from cartoondiff.data.download import sha256_of
from cartoondiff.runs.errors import UserError
from cartoondiff.runs.files import try_lock

log = logging.getLogger(__name__)

META_FILE = "meta.json"  # written last: its presence marks a complete cache
IMAGES_FILE = "images.npy"
IDS_FILE = "ids.npy"
FORMAT_VERSION = 2  # bump when the on-disk layout changes (2: checksums in meta.json)
TMP_PREFIX = ".partial-"
LOCK_FILE = ".lock"  # inside a temporary folder, locked by the process writing it
# A temporary folder exists only while the arrays are written (seconds); one this old whose
# lock nobody holds was left by a crash. The age also covers the instant between creating
# the folder and locking it, and filesystems where locks are not available.
STALE_AFTER_S = 3600.0


CACHE_ENV = "CARTOONDIFF_CACHE"  # the cache folder, wherever runs start (beats the default)


def default_cache_dir() -> Path:
    """The cache where no ``data.cache_dir`` is set: ``$CARTOONDIFF_CACHE``, else the user's
    cache folder (``platformdirs``: ``$XDG_CACHE_HOME/cartoondiff`` or ``~/.cache/cartoondiff``
    on Linux), so runs started from any folder share one cache: the avatars are rendered and
    the judge trained once per user."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(platformdirs.user_cache_dir("cartoondiff", appauthor=False))


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """``cache_dir`` as given (``~`` expanded), or ``default_cache_dir()`` for None."""
    return default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()


class CacheError(UserError, RuntimeError):
    """A cache folder that can be neither used nor replaced; the message names it."""


@dataclass(frozen=True)
class CacheEntry:
    """Arrays read from (or just written to) one cache folder.

    images: uint8 (N, 3, H, W), memory-mapped copy-on-write (edits never reach the disk);
    ids: int64 (N, 18) or None; info: what the builder recorded (e.g. skipped files);
    path: the folder; built: True when this call decoded the data, False when it was reused.
    """

    images: np.ndarray
    ids: np.ndarray | None
    path: Path
    built: bool
    info: dict[str, Any] = field(default_factory=dict)


# A builder returns (images uint8 (N,3,H,W), ids (N,18) or None, info JSON-able dict).
Builder = Callable[[], tuple[np.ndarray, np.ndarray | None, dict[str, Any]]]


def cache_key(key: Mapping[str, Any]) -> str:
    """Stable short hash of a JSON-able description of what the cache holds."""
    blob = json.dumps({"format": FORMAT_VERSION, **key}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def files_fingerprint(files: list[Path], root: Path) -> list[tuple[str, int, int]]:
    """(path relative to root, size, mtime_ns) per file: changes when any file changes.

    A file that cannot be stat-ed (broken symlink, symlink loop) gets (-1, -1): the
    decoder names it later, as it does every bad file, instead of an OSError here.
    """
    prefix = len(str(root)) + 1  # plain string slicing: pathlib's relative_to is slow at 100k
    out = []
    for f in files:
        try:
            st = os.stat(f)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        out.append((str(f)[prefix:].replace(os.sep, "/"), size, mtime))
    return out


def build_or_load_cache(
    cache_dir: str | Path, name: str, key: Mapping[str, Any], build: Builder
) -> CacheEntry:
    """Return the cached arrays for ``key``, calling ``build`` only if none are stored.

    ``name`` is a readable folder prefix (e.g. ``"cartoonset-64px"``); ``key`` is every
    setting the arrays depend on (hashed into the folder name and kept in meta.json).
    """
    cache_dir = Path(cache_dir)
    final = cache_dir / f"{name}-{cache_key(key)}"
    if cache_dir.is_dir():
        remove_stale_partials(cache_dir)
    if final.exists():
        try:
            entry = _load(final)
            log.info("using cached arrays in %s", final)
            return entry
        except _CorruptError as err:
            log.warning("%s: %s; discarding it and rebuilding from the source", final, err)
            _discard(final, str(err))

    try:  # before the (long) build: an unusable cache is named first
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheError(f"cache folder {cache_dir} is not usable ({err.strerror or err}): "
                         "set data.cache_dir or $CARTOONDIFF_CACHE to a writable folder") from None
    images, ids, info = build()
    if ids is not None and ids.dtype.kind in "iu":
        ids = ids.astype(np.int64, copy=False)  # one on-disk dtype; floats are refused below
    _check_arrays(images, ids)
    # Same parent as the final folder, so the rename below is atomic on one filesystem.
    tmp, lock = None, None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=cache_dir))
        # the lock tells this live build's folder from one a crash left
        with contextlib.suppress(OSError):  # no locks on this filesystem: the age guards it
            lock = try_lock(tmp / LOCK_FILE)
        np.save(tmp / IMAGES_FILE, np.ascontiguousarray(images))
        files = [IMAGES_FILE]
        if ids is not None:
            np.save(tmp / IDS_FILE, np.ascontiguousarray(ids))
            files.append(IDS_FILE)
        meta = {
            "format": FORMAT_VERSION,
            "key": _summary(key),
            "images_shape": list(images.shape),
            "labeled": ids is not None,
            "info": info,
            # hashed from the written files: what a later load reads is what was written
            "files": {f: {"size": (tmp / f).stat().st_size, "sha256": sha256_of(tmp / f)}
                      for f in files},
        }
        meta = json.loads(json.dumps(meta, default=str))  # exactly what a reader will parse
        meta["meta_sha256"] = _meta_digest(meta)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        if lock is not None:  # the folder's fresh mtime still guards it
            lock.release()
            lock = None
        (tmp / LOCK_FILE).unlink(missing_ok=True)
        try:  # published in one rename
            os.replace(tmp, final)
        except OSError:  # another process published the same key first: the same arrays
            if not (final / META_FILE).exists():
                raise
    except OSError as err:  # a full disk, a folder that turned read-only
        raise CacheError(f"could not write the cache in {cache_dir} ({err.strerror or err})"
                         ) from None
    finally:
        if lock is not None:
            lock.release()
        if tmp is not None:  # gone already unless something failed
            shutil.rmtree(tmp, ignore_errors=True)
    try:
        entry = _load(final)
    except _CorruptError as err:  # just written: the disk or another writer is at fault
        raise CacheError(f"{final}: cache written but it does not read back ({err}); "
                         f"delete the folder {final} and check the disk") from None
    log.info("wrote cache %s (%d images)", final, len(entry.images))
    return CacheEntry(entry.images, entry.ids, final, built=True, info=entry.info)


def remove_stale_partials(cache_dir: Path) -> list[Path]:
    """Delete ``.partial-*`` folders under ``cache_dir`` left by builds that died.

    A folder is removed only if it is older than ``STALE_AFTER_S`` (by mtime) and no live
    process holds its lock file; a second process building right now keeps its folder.
    Returns the folders removed.
    """
    removed = []
    now = time.time()
    with os.scandir(cache_dir) as entries:
        candidates = [Path(e.path) for e in entries if e.name.startswith(TMP_PREFIX)]
    for folder in candidates:
        try:
            age = now - folder.lstat().st_mtime
        except OSError:
            continue  # removed meanwhile by its owner or another cleaner
        if age < STALE_AFTER_S or _is_locked(folder):
            continue
        log.warning("removing %s, left by a cache build that did not finish", folder)
        _remove(folder)
        removed.append(folder)
    return removed


def _is_locked(folder: Path) -> bool:
    """True if a live process holds ``folder``'s lock (the kernel drops a dead one's)."""
    if not (folder / LOCK_FILE).is_file():
        return False  # no lock file: the builder is gone or about to publish
    lock = try_lock(folder / LOCK_FILE)
    if lock is not None:
        lock.release()
    return lock is None


def _discard(folder: Path, why: str) -> None:
    """Move a bad cache folder out of the way (one atomic rename), then delete it.

    Renaming first means no reader ever sees a half-deleted folder, and of two processes
    discarding the same folder one renames it and the other finds it gone.
    """
    trash = folder.with_name(f"{TMP_PREFIX}{folder.name}-discarded-{os.getpid()}-{time.time_ns()}")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return  # another process discarded it first
    except OSError as err:
        raise CacheError(f"{folder}: {why}, and it cannot be moved aside ({err.strerror}); "
                         f"delete the folder {folder} and rerun") from None
    _remove(trash)


def _remove(path: Path) -> None:
    """Delete a folder (or a file where a folder was expected), ignoring what is gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _summary(key: Mapping[str, Any]) -> dict[str, Any]:
    """The key for people reading meta.json: long lists (100k file stats) become a count.

    They are already in the folder's hash, and parsing them would slow every load.
    """
    return {k: f"<{len(v)} entries>" if isinstance(v, list | tuple) else v for k, v in key.items()}


class _CorruptError(Exception):
    """A cache folder failed a check on load; the message says which (not the folder)."""


def _meta_digest(meta: Mapping[str, Any]) -> str:
    """sha256 of meta.json's content other than this digest itself."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _load(folder: Path) -> CacheEntry:
    """Open and verify a cache folder (the module docstring's checks, cheapest first); raise
    ``_CorruptError`` saying what is wrong."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except FileNotFoundError:
        raise _CorruptError(f"incomplete ({META_FILE} missing)") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise _CorruptError(f"{META_FILE} unreadable ({err})") from None
    if not isinstance(meta, dict) or meta.get("meta_sha256") != _meta_digest(meta):
        raise _CorruptError(f"{META_FILE} does not match its checksum")
    if meta.get("format") != FORMAT_VERSION:
        raise _CorruptError(f"format {meta.get('format')}, expected {FORMAT_VERSION}")
    labeled = meta.get("labeled") is True
    expected = {IMAGES_FILE, IDS_FILE} if labeled else {IMAGES_FILE}
    files = meta.get("files")
    if not isinstance(files, dict) or set(files) != expected:
        raise _CorruptError(f"{META_FILE} lists files {files!r}, expected {sorted(expected)}")
    for name, want in files.items():
        _check_file(folder / name, want)
    try:
        # mmap "c" (copy-on-write): nothing read until used, and the array is writable,
        # so torch.from_numpy accepts it without a warning while the file stays untouched.
        images = np.load(folder / IMAGES_FILE, mmap_mode="c")
        ids = np.load(folder / IDS_FILE, mmap_mode="c") if labeled else None
    except (OSError, ValueError, EOFError) as err:
        raise _CorruptError(f"array file unreadable ({err})") from None
    try:
        _check_arrays(images, ids)
    except ValueError as err:
        raise _CorruptError(str(err)) from None
    info = meta.get("info")
    return CacheEntry(images, ids, folder, built=False, info=info if isinstance(info, dict) else {})


def _check_file(path: Path, want: Any) -> None:
    """Raise ``_CorruptError`` unless ``path`` has the size and sha256 recorded in ``want``."""
    if not isinstance(want, dict) or not {"size", "sha256"} <= set(want):
        raise _CorruptError(f"{META_FILE} has no size and sha256 for {path.name}")
    try:
        size = path.stat().st_size
        if size != want["size"]:
            raise _CorruptError(f"{path.name} is {size} bytes, {want['size']} were written")
        if sha256_of(path) != want["sha256"]:
            raise _CorruptError(f"{path.name} does not match its sha256 (bytes changed on disk)")
    except OSError as err:
        raise _CorruptError(f"{path.name} unreadable ({err.strerror or err})") from None


def _check_arrays(images: np.ndarray, ids: np.ndarray | None) -> None:
    """Raise ValueError unless images are uint8 (N, 3, H, W) and ids valid int64 (N, 18)."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {images.shape}")
    if ids is None:
        return
    if ids.dtype != np.int64 or ids.shape != (len(images), attributes.NUM_ATTRIBUTES):
        raise ValueError(f"ids must be int64 (N, {attributes.NUM_ATTRIBUTES}) matching "
                         f"{len(images)} images, got {ids.dtype} {ids.shape}")
    try:
        attributes.validate(torch.from_numpy(np.asarray(ids)))
    except attributes.SchemaError as err:
        raise ValueError(f"ids: {err}") from None
