"""The decode-once cache and the loader on top of it: reuse, invalidation, crash safety."""

from __future__ import annotations

import json
import os
import warnings
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
