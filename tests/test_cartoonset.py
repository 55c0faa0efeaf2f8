"""Reading Cartoon Set directories: labels, discovery, preprocessing and every bad input."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cartoondiff import attributes
from cartoondiff.data.cartoonset import (
    DataError,
    decode_files,
    find_images,
    load_image,
    read_labels,
)
from cartoondiff.data.dataset import load_avatar_data, normalize

SIZE, CROP = 40, 32  # tiny fixture avatars: 40x40 PNGs, cropped to 32


def write_avatars(folder: Path, n: int, seed: int = 0, size: int = SIZE) -> list[list[int]]:
    """Write ``n`` Cartoon-Set-format pairs (RGBA PNG with transparent ground + CSV).

    Each image is a coloured square on a transparent background; returns the ids written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    written = []
    for i in range(n):
        ids = [rng.randrange(c) for c in attributes.COUNTS]
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256), 255)
        im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        im.paste(colour, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
        stem = folder / f"cs{seed:02d}{i:04d}"
        im.save(stem.with_suffix(".png"))
        lines = [f'"{name}", {v}, {c}' for (name, c), v in zip(attributes.ATTRIBUTES, ids)]
        stem.with_suffix(".csv").write_text("\n".join(lines) + "\n")
        written.append(ids)
    return written


def test_labels_read_back_exactly(tmp_path: Path) -> None:
    written = write_avatars(tmp_path, 5)
    decoded = decode_files(find_images(tmp_path), crop=CROP, size=16, progress=False)
    assert decoded.images.shape == (5, 3, 16, 16) and decoded.images.dtype == np.uint8
    assert decoded.ids.tolist() == written
    assert decoded.skipped == []


def test_reads_renderer_output_exactly(tmp_path: Path) -> None:
    from cartoondiff.data import synthesize

    synthesize.write_cartoonset(tmp_path, 3, seed=5, size=SIZE)
    decoded = decode_files(find_images(tmp_path), crop=CROP, size=16, progress=False)
    assert decoded.ids.tolist() == [synthesize.sample_ids(5, i) for i in range(3)]
    assert (decoded.images[:, :, 0, 0] == 255).all()  # transparent ground became white


def test_labels_in_any_line_order(tmp_path: Path) -> None:
    written = write_avatars(tmp_path, 1)
    csv = next(tmp_path.glob("*.csv"))
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(reversed(lines)))
    assert read_labels(csv) == written[0]


@pytest.mark.parametrize("style", ["BOM", "CRLF", "BOM + CRLF, unquoted, no spaces"])
def test_labels_written_by_a_spreadsheet_are_read(tmp_path: Path, style: str) -> None:
    written = write_avatars(tmp_path, 1)
    csv = next(tmp_path.glob("*.csv"))
    lines = csv.read_text().splitlines()
    if "unquoted" in style:
        lines = [line.replace('"', "").replace(", ", ",") for line in lines]
    newline = "\r\n" if "CRLF" in style else "\n"
    text = newline.join(lines) + newline
    csv.write_bytes(("\ufeff" if "BOM" in style else "").encode() + text.encode())
    assert read_labels(csv) == written[0]  # before: BOM -> unknown attribute '\ufeff"eye_angle"'


def test_recursive_discovery(tmp_path: Path) -> None:
    # Cartoon Set 100k layout: subfolders 0..9 (three here), plus a nested level
    written = []
    for part in range(3):
        written += write_avatars(tmp_path / str(part), 2, seed=part)
    written += write_avatars(tmp_path / "9" / "deeper", 1, seed=9)
    files = find_images(tmp_path)
    assert len(files) == 7 and files == sorted(files)
    decoded = decode_files(files, crop=CROP, size=8, progress=False)
    assert decoded.ids.tolist() == written


def test_alpha_onto_white_and_centre_crop(tmp_path: Path) -> None:
    im = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))  # transparent black: must become white
    im.paste((255, 0, 0, 255), (16, 16, 24, 24))  # red square at the centre
    im.paste((0, 0, 255, 255), (0, 0, 4, SIZE))  # blue strip outside the 32 px centre crop
    im.save(tmp_path / "cs0.png")
    out = load_image(tmp_path / "cs0.png", crop=CROP, size=CROP)  # crop only, no resize
    assert out.shape == (3, CROP, CROP)
    assert (out[:, 0, 0] == 255).all()  # was transparent
    assert out[:, CROP // 2, CROP // 2].tolist() == [255, 0, 0]
    assert not ((out[0] == 0) & (out[2] == 255)).any()  # the blue strip was cropped away
    small = load_image(tmp_path / "cs0.png", crop=CROP, size=8)
    assert small.shape == (3, 8, 8) and small[0, 4, 4] > 200 and small[1, 4, 4] < 60


def test_real_sample_loads_unlabeled(tmp_path: Path, real_sample: Path) -> None:
    data = load_avatar_data("cartoonset", real_sample, image_size=64, crop=360, labeled=False,
                            cache_dir=tmp_path, limit=20, progress=False)
    assert len(data) == 20 and data.ids is None and data.skipped == 0
    assert data.images.shape == (20, 3, 64, 64) and data.images.dtype == torch.uint8
    pm1, unit = normalize(data.images, "pm1"), normalize(data.images, "unit")
    assert pm1.dtype == torch.float32 and unit.dtype == torch.float32
    assert pm1.min() >= -1 and pm1.max() == 1  # white background reaches the top
    assert unit.min() >= 0 and unit.max() == 1
    assert pm1.min() < -0.5 and unit.min() < 0.25  # dark pixels (eyes, hair) too
    assert (data.images[:, :, 0, 0] == 255).all()  # corners are background


def test_real_sample_needs_labels_in_labeled_mode(tmp_path: Path, real_sample: Path) -> None:
    with pytest.raises(DataError, match=r"has PNGs but no attribute labels \(cs\d+\.csv is "
                                        r"missing\).*experiment=fig01_02_vanilla_unit"):
        load_avatar_data("cartoonset", real_sample, labeled=True, cache_dir=tmp_path, limit=3,
                         progress=False)


def _truncate(png: Path) -> None:
    data = png.read_bytes()
    png.write_bytes(data[: len(data) // 2])


def _garbage(png: Path) -> None:
    png.write_bytes(b"this is not a png")


def _too_small(png: Path) -> None:
    Image.new("RGB", (CROP - 1, CROP - 1), "white").save(png)


def _edit_csv(edit: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    def apply(png: Path) -> None:
        csv = png.with_suffix(".csv")
        csv.write_text("\n".join(edit(csv.read_text().splitlines())))

    return apply


def _replace_line(name: str, line: str) -> Callable[[list[str]], list[str]]:
    row = attributes.index(name)
    return lambda lines: lines[:row] + [line] + lines[row + 1:]


BAD_INPUTS = {
    # case: (how to break file cs000002, which file the error names, what it says)
    "truncated png": (_truncate, ".png", "truncated"),
    "unreadable png": (_garbage, ".png", "unreadable"),
    "image smaller than crop": (_too_small, ".png", "smaller than the 32 px crop"),
    "missing csv": (lambda png: png.with_suffix(".csv").unlink(), ".csv", "label file missing"),
    "unknown attribute": (_edit_csv(_replace_line("hair", '"hat", 3, 111')), ".csv",
                          "unknown attribute 'hat'"),
    "missing attribute": (_edit_csv(lambda lines: lines[:-1]), ".csv",
                          "missing attribute.*eye_eyebrow_distance"),
    "value out of range": (_edit_csv(_replace_line("glasses", '"glasses", 12, 12')), ".csv",
                           r"glasses=12 out of range 0\.\.11"),
    "count disagrees": (_edit_csv(_replace_line("hair", '"hair", 3, 110')), ".csv",
                        "hair has count 110, schema says 111"),
    "duplicate attribute": (_edit_csv(lambda lines: lines + [lines[0]]), ".csv", "given twice"),
    "malformed line": (_edit_csv(lambda lines: ["eye_angle 2 3"] + lines[1:]), ".csv",
                       "expected"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_naming_file(tmp_path: Path, case: str) -> None:
    break_file, suffix, message = BAD_INPUTS[case]
    write_avatars(tmp_path, 4)
    bad = tmp_path / "cs000002.png"
    break_file(bad)
    with pytest.raises(DataError, match=message) as err:
        decode_files(find_images(tmp_path), crop=CROP, size=8, progress=False)
    assert f"cs000002{suffix}" in str(err.value)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_skipped_and_counted(tmp_path: Path, case: str) -> None:
    break_file, _, message = BAD_INPUTS[case]
    written = write_avatars(tmp_path, 4)
    break_file(tmp_path / "cs000002.png")
    decoded = decode_files(find_images(tmp_path), crop=CROP, size=8, on_error="skip",
                           progress=False)
    assert decoded.ids.tolist() == written[:2] + written[3:]
    assert [p.name for p, _ in decoded.skipped] == ["cs000002.png"]
    assert "cs000002" in decoded.skipped[0][1]


def test_skip_reported_by_loader_and_not_hidden_later(tmp_path: Path, caplog) -> None:
    write_avatars(tmp_path / "data", 4)
    (tmp_path / "data" / "cs000001.csv").unlink()
    kwargs = {"image_size": 8, "crop": CROP, "cache_dir": tmp_path / "cache", "progress": False}
    with caplog.at_level(logging.WARNING):
        data = load_avatar_data("cartoonset", tmp_path / "data", on_error="skip", **kwargs)
    assert len(data) == 3 and data.skipped == 1
    assert "skipped 1 bad file" in caplog.text and "cs000001.csv" in caplog.text
    # the same (cached) data asked for with on_error="raise" still fails loudly
    with pytest.raises(DataError, match="cs000001.csv"):
        load_avatar_data("cartoonset", tmp_path / "data", on_error="raise", **kwargs)


def test_unlabeled_mode_needs_no_csvs(tmp_path: Path) -> None:
    write_avatars(tmp_path, 2)
    (tmp_path / "cs000000.csv").unlink()
    decoded = decode_files(find_images(tmp_path), crop=CROP, size=8, labeled=False,
                           progress=False)
    assert decoded.ids is None and len(decoded.images) == 2


def test_empty_and_missing_roots(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path}: no .png images found"):
        find_images(tmp_path)
    (tmp_path / "cs1.csv").write_text("only labels here")
    with pytest.raises(DataError, match="no .png images found"):
        find_images(tmp_path)
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"{missing}: data directory does not exist"):
        load_avatar_data("cartoonset", missing, cache_dir=tmp_path / "cache", progress=False)


def test_pool_matches_sequential(tmp_path: Path) -> None:
    write_avatars(tmp_path, 70)  # above the size where decode_files uses a process pool
    files = find_images(tmp_path)
    one = decode_files(files, crop=CROP, size=8, workers=1, progress=False)
    two = decode_files(files, crop=CROP, size=8, workers=2, progress=False)
    assert np.array_equal(one.images, two.images) and np.array_equal(one.ids, two.ids)
    _truncate(files[40])
    with pytest.raises(DataError, match=files[40].name):
        decode_files(files, crop=CROP, size=8, workers=2, progress=False)
