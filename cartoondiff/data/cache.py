"""A decode-once cache of avatar arrays: uint8 images (N, 3, H, W) + attribute ids (N, 18).

Each cache lives in ``cache_dir/<name>-<hash>/`` where the hash covers everything that
changes the arrays (the source, its file list with sizes and mtimes, image size, crop,
labels, or for synthetic data n, seed and renderer version). A changed source or setting
therefore lands in a new folder and never reuses stale arrays.

Writing is crash-safe: the arrays go into a temporary sibling folder, ``meta.json`` is
written last, and the folder is renamed into place in one step. A folder without
``meta.json`` (a crash, a copy in progress) is never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

META_FILE = "meta.json"  # written last: its presence marks a complete cache
IMAGES_FILE = "images.npy"
IDS_FILE = "ids.npy"
FORMAT_VERSION = 1  # bump when the on-disk layout changes
TMP_PREFIX = ".partial-"


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
    """(path relative to root, size, mtime_ns) per file: changes when any file changes."""
    prefix = len(str(root)) + 1  # plain string slicing: pathlib's relative_to is slow at 100k
    out = []
    for f in files:
        st = os.stat(f)
        out.append((str(f)[prefix:].replace(os.sep, "/"), st.st_size, st.st_mtime_ns))
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
    entry = _load(final)
    if entry is not None:
        log.info("using cached arrays in %s", final)
        return entry
    broken = final.exists()  # present but incomplete or unreadable: replace it

    images, ids, info = build()
    _check_arrays(images, ids)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Same parent as the final folder, so the rename below is atomic on one filesystem.
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=cache_dir))
    try:
        np.save(tmp / IMAGES_FILE, np.ascontiguousarray(images))
        if ids is not None:
            np.save(tmp / IDS_FILE, np.ascontiguousarray(ids, dtype=np.int64))
        meta = {
            "format": FORMAT_VERSION,
            "key": _summary(key),
            "images_shape": list(images.shape),
            "labeled": ids is not None,
            "info": info,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1, default=str))
        _publish(tmp, final, replace=broken)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already unless something failed
    entry = _load(final)
    if entry is None:
        raise RuntimeError(f"{final}: cache written but cannot be read back")
    log.info("wrote cache %s (%d images)", final, len(entry.images))
    return CacheEntry(entry.images, entry.ids, final, built=True, info=entry.info)


def _summary(key: Mapping[str, Any]) -> dict[str, Any]:
    """The key for people reading meta.json: long lists (100k file stats) become a count.

    They are already in the folder's hash, and parsing them would slow every load.
    """
    return {k: f"<{len(v)} entries>" if isinstance(v, list | tuple) else v for k, v in key.items()}


def _publish(tmp: Path, final: Path, replace: bool) -> None:
    """Move a finished temp folder to ``final``, first removing a broken one if ``replace``."""
    if replace:
        log.warning("%s: replacing incomplete or unreadable cache folder", final)
        shutil.rmtree(final, ignore_errors=True)
    try:
        os.replace(tmp, final)
    except OSError:
        # Another process published the same key first; its arrays are identical.
        if not (final / META_FILE).exists():
            raise


def _load(folder: Path) -> CacheEntry | None:
    """Open a complete cache folder, or None if it is absent, incomplete or unreadable."""
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        # mmap "c" (copy-on-write): nothing read until used, and the array is writable,
        # so torch.from_numpy accepts it without a warning while the file stays untouched.
        images = np.load(folder / IMAGES_FILE, mmap_mode="c")
        ids = np.load(folder / IDS_FILE, mmap_mode="c") if meta["labeled"] else None
    except (OSError, ValueError, KeyError) as err:
        log.warning("%s: ignoring unreadable cache (%s)", folder, err)
        return None
    if list(images.shape) != meta["images_shape"] or (ids is not None and len(ids) != len(images)):
        log.warning("%s: ignoring cache whose arrays disagree with meta.json", folder)
        return None
    return CacheEntry(images, ids, folder, built=False, info=meta.get("info", {}))


def _check_arrays(images: np.ndarray, ids: np.ndarray | None) -> None:
    """Refuse to cache arrays of the wrong type or shape (a builder bug, not bad data)."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {images.shape}")
    if ids is not None and (ids.ndim != 2 or len(ids) != len(images)):
        raise ValueError(f"ids must be (N, 18) matching images, got {ids.shape}")
