"""The decode-once cache and the loader on top of it: reuse, invalidation, crash safety."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from cartoondiff import attributes
from cartoondiff.data import cache, dataset
from cartoondiff.data.dataset import denormalize, load_avatar_data, normalize
from tests.test_cartoonset import CROP, write_avatars


def _load(root: Path, cache_dir: Path, **overrides) -> dataset.AvatarData:
    kwargs = {"image_size": 8, "crop": CROP, "labeled": True, "progress": False} | overrides
    return load_avatar_data("cartoonset", root, cache_dir=cache_dir, **kwargs)


class DecodeCounter:
    """Stands in for dataset.decode_files and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)

    real = staticmethod(dataset.decode_files)


@pytest.fixture
def counter(monkeypatch) -> DecodeCounter:
    c = DecodeCounter()
    monkeypatch.setattr(dataset, "decode_files", c)
    return c


def test_second_load_decodes_nothing(tmp_path: Path, counter: DecodeCounter) -> None:
    written = write_avatars(tmp_path / "data", 4)
    first = _load(tmp_path / "data", tmp_path / "cache")
    assert counter.calls == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch.from_numpy on a read-only memmap
        second = _load(tmp_path / "data", tmp_path / "cache")
    assert counter.calls == 1  # nothing decoded
    assert second.cache_path == first.cache_path
    assert torch.equal(second.images, first.images) and second.ids.tolist() == written
    assert second.ids.dtype == torch.long and second.images.dtype == torch.uint8
    assert isinstance(second.images.numpy(), np.memmap) or second.images.numpy().base is not None


def test_editing_loaded_images_leaves_cache_intact(tmp_path: Path) -> None:
    write_avatars(tmp_path / "data", 2)
    data = _load(tmp_path / "data", tmp_path / "cache")
    again = _load(tmp_path / "data", tmp_path / "cache")
    original = again.images.clone()
    again.images.zero_()  # copy-on-write: private to this process
    assert torch.equal(_load(tmp_path / "data", tmp_path / "cache").images, original)
    assert torch.equal(data.images, original)


@pytest.mark.parametrize(
    "change", [{"image_size": 16}, {"crop": CROP - 4}, {"labeled": False}, {"limit": 3}]
)
def test_changed_setting_builds_new_cache(tmp_path: Path, counter, change: dict) -> None:
    write_avatars(tmp_path / "data", 4)
    first = _load(tmp_path / "data", tmp_path / "cache")
    changed = _load(tmp_path / "data", tmp_path / "cache", **change)
    assert counter.calls == 2 and changed.cache_path != first.cache_path
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_changed_source_builds_new_cache(tmp_path: Path, counter) -> None:
    write_avatars(tmp_path / "data", 4)
    first = _load(tmp_path / "data", tmp_path / "cache")
    csv = tmp_path / "data" / "cs000001.csv"
    lines = csv.read_text().splitlines()
    lines[0] = '"eye_angle", 2, 3' if '"eye_angle", 2' not in lines[0] else '"eye_angle", 0, 3'
    csv.write_text("\n".join(lines))
    stat = csv.stat()  # same size; make sure the mtime moves even on coarse-clock filesystems
    os.utime(csv, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    changed = _load(tmp_path / "data", tmp_path / "cache")
    assert counter.calls == 2 and changed.cache_path != first.cache_path
    assert changed.ids[1, 0] != first.ids[1, 0]
    write_avatars(tmp_path / "data", 1, seed=7)  # a new file appears
    grown = _load(tmp_path / "data", tmp_path / "cache")
    assert counter.calls == 3 and len(grown) == 5


def test_half_written_cache_is_ignored(tmp_path: Path, counter) -> None:
    write_avatars(tmp_path / "data", 3)
    good = _load(tmp_path / "data", tmp_path / "cache")
    folder, expected = good.cache_path, good.images.clone()  # good.images maps the file
    # a crash before meta.json was written: arrays there but no marker
    (folder / cache.META_FILE).unlink()
    np.save(folder / cache.IMAGES_FILE, np.zeros((1, 3, 8, 8), np.uint8))
    # and a temp folder left behind by another crashed build
    leftover = tmp_path / "cache" / f"{cache.TMP_PREFIX}{folder.name}-dead"
    leftover.mkdir()
    np.save(leftover / cache.IMAGES_FILE, np.zeros((1, 3, 8, 8), np.uint8))
    rebuilt = _load(tmp_path / "data", tmp_path / "cache")
    assert counter.calls == 2 and rebuilt.cache_path == folder
    assert torch.equal(rebuilt.images, expected)
    assert json.loads((folder / cache.META_FILE).read_text())["images_shape"] == [3, 3, 8, 8]


def test_crash_during_build_leaves_nothing_usable(tmp_path: Path) -> None:
    def crashing_build():
        raise KeyboardInterrupt

    images = np.full((2, 3, 4, 4), 7, np.uint8)
    with pytest.raises(KeyboardInterrupt):
        cache.build_or_load_cache(tmp_path, "t", {"a": 1}, crashing_build)
    assert not any(tmp_path.glob("*/" + cache.META_FILE))

    calls = []

    def build():
        calls.append(1)
        return images, None, {"note": "x"}

    first = cache.build_or_load_cache(tmp_path, "t", {"a": 1}, build)
    second = cache.build_or_load_cache(tmp_path, "t", {"a": 1}, build)
    other = cache.build_or_load_cache(tmp_path, "t", {"a": 2}, build)
    assert len(calls) == 2 and first.built and not second.built and other.built
    assert np.array_equal(second.images, images) and second.ids is None
    assert second.info == {"note": "x"} and other.path != first.path
    assert not [p for p in os.listdir(tmp_path) if p.startswith(cache.TMP_PREFIX)]


def test_synthetic_source_cached_by_n_seed_size(tmp_path: Path, monkeypatch) -> None:
    from cartoondiff.data import synthesize

    renders = []
    real = synthesize.render_arrays

    def counting(*args, **kwargs):
        renders.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(synthesize, "render_arrays", counting)
    kwargs = {"image_size": 16, "crop": 360, "n": 3, "cache_dir": tmp_path, "progress": False}
    data = load_avatar_data("synthetic", None, seed=0, **kwargs)
    assert data.images.shape == (3, 3, 16, 16) and data.images.dtype == torch.uint8
    assert data.ids.shape == (3, 18) and data.source == "synthetic"
    attributes.validate(data.ids)
    again = load_avatar_data("synthetic", "ignored/root", seed=0, **kwargs)
    assert len(renders) == 1 and torch.equal(again.images, data.images)
    other = load_avatar_data("synthetic", None, seed=1, **kwargs)
    assert len(renders) == 2 and other.cache_path != data.cache_path
    assert load_avatar_data("synthetic", None, seed=0, labeled=False, **kwargs).ids is None


def test_normalize_roundtrip_and_ranges() -> None:
    pixels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(2, 3, 16, 16)
    for mode, (lo, hi) in {"pm1": (-1.0, 1.0), "unit": (0.0, 1.0)}.items():
        x = normalize(pixels, mode)
        assert x.dtype == torch.float32 and x.min() == lo and x.max() == hi
        assert torch.equal(denormalize(x, mode), pixels)
        noisy = x + torch.randn_like(x) * 2  # samples overshoot: clamped, still uint8
        out = denormalize(noisy, mode)
        assert out.dtype == torch.uint8 and out.min() == 0 and out.max() == 255


def test_bad_arguments_named() -> None:
    pixels = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="'zero_one'"):
        normalize(pixels, "zero_one")
    with pytest.raises(ValueError, match="'zero_one'"):
        denormalize(pixels.float(), "zero_one")
    with pytest.raises(ValueError, match="uint8"):
        normalize(pixels.float(), "pm1")
    with pytest.raises(ValueError, match="'imagenet'"):
        load_avatar_data("imagenet", None)
    with pytest.raises(ValueError, match="'ignore'"):
        load_avatar_data("cartoonset", "x", on_error="ignore")


# ----------------------------------------------------------------------------- damaged caches


def _flip_middle_byte(path: Path) -> None:
    """Same size, one bit changed in the data (a disk or copy error no size check sees)."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) - (len(raw) - 128) // 2] ^= 0x01  # past the 128-byte .npy header
    path.write_bytes(bytes(raw))


def _forge(folder: Path, name: str, array: np.ndarray) -> None:
    """Replace one array *and* its checksums, as a buggy older writer would have left it."""
    np.save(folder / name, array)
    meta_path = folder / cache.META_FILE
    meta = json.loads(meta_path.read_text())
    data = (folder / name).read_bytes()
    meta["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if name == cache.IMAGES_FILE:
        meta["images_shape"] = list(array.shape)
    meta["meta_sha256"] = cache._meta_digest(meta)
    meta_path.write_text(json.dumps(meta))


def _edit_meta_same_size(folder: Path) -> None:
    meta_path = folder / cache.META_FILE
    text = meta_path.read_text()
    assert '"skipped": 0' in text
    meta_path.write_text(text.replace('"skipped": 0', '"skipped": 8'))  # same length


IMAGES, IDS, META = cache.IMAGES_FILE, cache.IDS_FILE, cache.META_FILE
DAMAGE = {
    # case: (damage to apply to the cache folder, what the warning says)
    "images: one bit flipped": (lambda f: _flip_middle_byte(f / IMAGES),
                                "images.npy does not match its sha256"),
    "images: emptied": (lambda f: (f / IMAGES).write_bytes(b""), "images.npy is 0 bytes"),
    "images: truncated": (lambda f: (f / IMAGES).write_bytes((f / IMAGES).read_bytes()[:200]),
                          "images.npy is 200 bytes"),
    "images: deleted": (lambda f: (f / IMAGES).unlink(), "images.npy unreadable"),
    "ids: one bit flipped": (lambda f: _flip_middle_byte(f / IDS), "ids.npy does not match"),
    "ids: emptied": (lambda f: (f / IDS).write_bytes(b""), "ids.npy is 0 bytes"),
    "ids: out of range, checksums forged": (
        lambda f: _forge(f, IDS, np.full((4, 18), 111, np.int64)),
        r"ids: attribute \w+=111 out of range"),
    "ids: float, checksums forged": (
        lambda f: _forge(f, IDS, np.zeros((4, 18), np.float64)), "ids must be int64"),
    "ids: wrong count, checksums forged": (
        lambda f: _forge(f, IDS, np.zeros((3, 18), np.int64)), r"ids must be int64 \(N, 18\)"),
    "images: uint16, checksums forged": (
        lambda f: _forge(f, IMAGES, np.zeros((4, 3, 8, 8), np.uint16)), "images must be uint8"),
    "meta.json: one value changed": (_edit_meta_same_size, "meta.json does not match its checksum"),
    "meta.json: garbage": (lambda f: (f / META).write_bytes(b"\x00\xff" * 40),
                           "meta.json unreadable"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_cache_is_rebuilt_with_a_warning_naming_it(
    tmp_path: Path, counter: DecodeCounter, caplog, case: str
) -> None:
    damage, reason = DAMAGE[case]
    write_avatars(tmp_path / "data", 4)
    good = _load(tmp_path / "data", tmp_path / "cache")
    folder, images, ids = good.cache_path, good.images.clone(), good.ids.clone()
    del good  # drop the memory map before damaging the file under it
    damage(folder)
    with caplog.at_level(logging.WARNING):
        again = _load(tmp_path / "data", tmp_path / "cache")
    assert counter.calls == 2  # decoded again, from the source
    assert again.cache_path == folder
    assert torch.equal(again.images, images) and torch.equal(again.ids, ids)
    assert re.search(reason, caplog.text), caplog.text
    assert str(folder) in caplog.text and "rebuilding" in caplog.text
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [folder.name]  # no trash
    _load(tmp_path / "data", tmp_path / "cache")
    assert counter.calls == 2  # the rebuilt cache verifies and is used


def test_damaged_cache_that_cannot_be_moved_is_one_error_naming_it(
    tmp_path: Path, monkeypatch
) -> None:
    write_avatars(tmp_path / "data", 2)
    folder = _load(tmp_path / "data", tmp_path / "cache").cache_path
    (folder / IMAGES).write_bytes(b"")

    def refuse(src, dst):  # noqa: ANN001, ANN202 -- e.g. a cache folder owned by another user
        raise PermissionError(13, "Permission denied", str(src))

    monkeypatch.setattr(cache.os, "rename", refuse)
    with pytest.raises(cache.CacheError) as err:
        _load(tmp_path / "data", tmp_path / "cache")
    msg = str(err.value)
    assert f"delete the folder {folder}" in msg and "images.npy is 0 bytes" in msg
    assert "\n" not in msg
    assert (folder / META).exists()  # nothing deleted behind the user's back


def test_cache_written_wrong_is_refused_before_it_is_saved(tmp_path: Path) -> None:
    def bad_ids():
        return np.zeros((2, 3, 4, 4), np.uint8), np.full((2, 18), -1, np.int64), {}

    with pytest.raises(ValueError, match="out of range"):
        cache.build_or_load_cache(tmp_path, "t", {"a": 1}, bad_ids)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- leftovers


_HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


def test_stale_partial_folders_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    old = time.time() - 2 * cache.STALE_AFTER_S

    def partial(name: str, age: float | None = old) -> Path:
        folder = tmp_path / f"{cache.TMP_PREFIX}{name}"
        folder.mkdir()
        (folder / IMAGES).write_bytes(b"half an array")
        if age is not None:
            os.utime(folder, (age, age))
        return folder

    crashed = partial("crashed")  # old, no lock: a build killed before it locked or published
    fresh = partial("fresh", age=None)  # just created: maybe about to take its lock
    live = partial("live")  # old but its builder is alive (e.g. stopped with Ctrl-Z)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(live / cache.LOCK_FILE)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        os.utime(live, (old, old))  # creating the lock file touched it
        assert cache.remove_stale_partials(tmp_path) == [crashed]
        assert fresh.exists() and live.exists() and not crashed.exists()
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead builder's lock: its folder goes now
    assert cache.remove_stale_partials(tmp_path) == [live]
    assert sorted(p.name for p in tmp_path.iterdir()) == [fresh.name]


def test_a_load_cleans_up_after_a_crashed_build(tmp_path: Path) -> None:
    write_avatars(tmp_path / "data", 2)
    (tmp_path / "cache").mkdir()
    leftover = tmp_path / "cache" / f"{cache.TMP_PREFIX}cartoonset-8px-0123-dead"
    leftover.mkdir()
    (leftover / IMAGES).write_bytes(b"x" * 1000)
    os.utime(leftover, (0, 0))
    data = _load(tmp_path / "data", tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [data.cache_path.name]


def test_two_builders_at_once_publish_one_cache(tmp_path: Path) -> None:
    images = np.full((3, 3, 4, 4), 9, np.uint8)
    ids = np.zeros((3, 18), np.int64)
    both_building = threading.Barrier(2, timeout=30)

    def build():
        both_building.wait()  # neither has published when the other starts writing
        return images, ids, {}

    with ThreadPoolExecutor(2) as pool:
        entries = list(pool.map(lambda _: cache.build_or_load_cache(
            tmp_path, "t", {"a": 1}, build), range(2)))
    assert entries[0].path == entries[1].path and all(e.built for e in entries)
    for e in entries:
        assert np.array_equal(e.images, images) and np.array_equal(e.ids, ids)
    assert [p.name for p in tmp_path.iterdir()] == [entries[0].path.name]
