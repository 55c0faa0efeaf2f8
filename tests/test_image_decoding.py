"""Every PNG colour type decodes to the right avatar; every bad file is a DataError naming it.

One real avatar is saved in each mode Pillow opens (and, for what Pillow cannot write,
by a small PNG writer below: 16-bit colour, sub-byte grey with a colour key) and must
decode to the RGB reference on white. Then file-system faults and decompression bombs are
injected into a data folder and must be reported (on_error="raise") or skipped and
counted (on_error="skip") through the real loader, never escape as raw exceptions.
"""

from __future__ import annotations

import builtins
import io
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cartoondiff.data.cartoonset import DataError, decode_files, find_images, load_image
from cartoondiff.data.dataset import load_avatar_data
from tests.conftest import real_sample_dir
from tests.test_cartoonset import CROP, write_avatars

SIDE = 64


# ----------------------------------------------------------------------------- PNG writer


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path: Path, samples: np.ndarray, color_type: int, depth: int,
              palette: np.ndarray | None = None, trns: bytes | None = None) -> Path:
    """Write ``samples`` (H, W) or (H, W, C), ints at ``depth`` bits, as a PNG (no filters)."""
    h, w = samples.shape[:2]
    flat = samples.reshape(h, -1)
    if depth == 16:
        rows = flat.astype(">u2").view(np.uint8).reshape(h, -1)
    elif depth == 8:
        rows = flat.astype(np.uint8)
    else:  # pack 8 // depth samples per byte, first sample in the high bits
        per = 8 // depth
        padded = np.pad(flat, ((0, 0), (0, -flat.shape[1] % per))).astype(np.uint8)
        shifts = np.arange(per - 1, -1, -1, dtype=np.uint8) * depth
        rows = (padded.reshape(h, -1, per) << shifts).sum(-1).astype(np.uint8)
    raw = np.hstack([np.zeros((h, 1), np.uint8), rows]).tobytes()  # filter byte 0 per row
    header = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
    if palette is not None:
        data += _chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    if trns is not None:
        data += _chunk(b"tRNS", trns)
    path.write_bytes(data + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))
    return path


def write_blank_png(path: Path, width: int, height: int) -> Path:
    """A valid all-black 1-bit PNG of any size, a few kB on disk (a decompression bomb)."""
    raw = bytes(height * (1 + (width + 7) // 8))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
                     + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b""))
    return path


# ----------------------------------------------------------------------------- every mode


@pytest.fixture(scope="module")
def avatar() -> tuple[np.ndarray, np.ndarray]:
    """A real avatar (a built-in one where no real sample is at hand), (SIDE, SIDE, 3) uint8
    on white, and its background mask (SIDE, SIDE)."""
    from cartoondiff.data.synthesize import render_avatar, sample_ids

    sample = real_sample_dir()
    with (Image.open(sorted(sample.glob("*.png"))[0]) if sample else
          render_avatar(sample_ids(0, 0))) as im:
        rgb = im.convert("RGB").crop((70, 70, 430, 430)).resize((SIDE, SIDE),
                                                                 Image.Resampling.LANCZOS)
    pixels = np.asarray(rgb)
    background = (pixels == 255).all(-1)
    assert 0.2 < background.mean() < 0.8  # an avatar, not a blank frame
    return pixels, background


def _grey(rgb: np.ndarray) -> np.ndarray:
    """The reference in grey (Pillow's ITU-R 601 luma), as RGB: what a grey PNG can hold."""
    return np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[..., None], 3, -1)


# Each case writes the avatar in one mode into a folder and returns (file, expected RGB,
# largest allowed per-pixel difference); transparent pixels hold black, expected is white.
Case = Callable[[Path, np.ndarray, np.ndarray], tuple[Path, np.ndarray, int]]


def _pillow(mode_image: Callable[[np.ndarray, np.ndarray], Image.Image], expected: str = "rgb",
            tolerance: int = 0, **save: object) -> Case:
    def case(folder: Path, rgb: np.ndarray, bg: np.ndarray) -> tuple[Path, np.ndarray, int]:
        path = folder / "cs1.png"
        mode_image(rgb, bg).save(path, **save)
        return path, (rgb if expected == "rgb" else _grey(rgb)), tolerance
    return case


def _rgba(rgb: np.ndarray, bg: np.ndarray) -> np.ndarray:
    return np.dstack([np.where(bg[..., None], 0, rgb), np.where(bg, 0, 255)]).astype(np.uint8)


def _grey_alpha(rgb: np.ndarray, bg: np.ndarray) -> np.ndarray:
    grey = _grey(rgb)[..., 0]
    return np.dstack([np.where(bg, 0, grey), np.where(bg, 0, 255)]).astype(np.uint8)


def _keyed_grey(rgb: np.ndarray, bg: np.ndarray, key: int) -> np.ndarray:
    """Grey avatar whose background holds ``key`` (and no avatar pixel does)."""
    grey = _grey(rgb)[..., 0].astype(np.int64)
    grey = np.where(grey == key, key + 1, grey)
    return np.where(bg, key, grey)


def _written(color_type: int, depth: int, make: Callable, expected: str = "rgb",
             trns: Callable | None = None) -> Case:
    """A PNG written by write_png: ``make(rgb, bg)`` gives the samples at ``depth`` bits."""
    def case(folder: Path, rgb: np.ndarray, bg: np.ndarray) -> tuple[Path, np.ndarray, int]:
        path = write_png(folder / "cs1.png", make(rgb, bg), color_type, depth,
                         trns=trns() if trns else None)
        return path, (rgb if expected == "rgb" else _grey(rgb)), 0
    return case


def _low_bit_grey(depth: int, keyed: bool) -> Case:
    """Grey at 1, 2 or 4 bits: the reference is the avatar quantized the same way."""
    def case(folder: Path, rgb: np.ndarray, bg: np.ndarray) -> tuple[Path, np.ndarray, int]:
        top = (1 << depth) - 1
        levels = (_grey(rgb)[..., 0].astype(np.int64) * top + 127) // 255  # rounded
        key = 1 if keyed else None
        if keyed:  # background holds the key; avatar pixels at the key move one level up
            levels = np.where(bg, key, np.where(levels == key, key + 1, levels))
        path = write_png(folder / "cs1.png", levels, 0, depth,
                         trns=struct.pack(">H", key) if keyed else None)
        expected = levels * (255 // top)
        if keyed:
            expected = np.where(bg, 255, expected)
        return path, np.repeat(expected[..., None], 3, -1), 0
    return case


def _palette(colors: int, bits: int, transparent: bool) -> Case:
    def case(folder: Path, rgb: np.ndarray, bg: np.ndarray) -> tuple[Path, np.ndarray, int]:
        image = Image.fromarray(_rgba(rgb, bg) if transparent else rgb)
        quantized = image.quantize(colors)  # RGBA -> P with per-entry alpha (tRNS)
        path = folder / "cs1.png"
        quantized.save(path, bits=bits)
        # a palette of `colors` entries approximates the avatar: compare on average below
        return path, rgb, -1
    return case


MODES: dict[str, Case] = {
    "RGB": _pillow(lambda rgb, bg: Image.fromarray(rgb)),
    "RGBA, transparent ground": _pillow(lambda rgb, bg: Image.fromarray(_rgba(rgb, bg))),
    "RGB, colour key (tRNS)": _pillow(
        lambda rgb, bg: Image.fromarray(np.where(bg[..., None], [1, 2, 3], rgb).astype(np.uint8)),
        transparency=(1, 2, 3)),
    "L": _pillow(lambda rgb, bg: Image.fromarray(rgb).convert("L"), "grey"),
    "LA": _pillow(lambda rgb, bg: Image.fromarray(_grey_alpha(rgb, bg)), "grey"),
    "L, colour key (tRNS)": _pillow(
        lambda rgb, bg: Image.fromarray(_keyed_grey(rgb, bg, 7).astype(np.uint8)), "grey",
        transparency=7),
    "1": _low_bit_grey(1, keyed=False),
    "L 2-bit": _low_bit_grey(2, keyed=False),
    "L 4-bit": _low_bit_grey(4, keyed=False),
    "L 2-bit, colour key": _low_bit_grey(2, keyed=True),
    "L 4-bit, colour key": _low_bit_grey(4, keyed=True),
    "I;16": _pillow(lambda rgb, bg: Image.fromarray(_grey(rgb)[..., 0].astype(np.uint16) * 257),
                    "grey"),
    "I;16B": _pillow(lambda rgb, bg: Image.frombytes(
        "I;16B", (SIDE, SIDE), (_grey(rgb)[..., 0].astype(">u2") * 257).tobytes()), "grey"),
    "I;16, colour key": _pillow(
        lambda rgb, bg: Image.fromarray(_keyed_grey(rgb, bg, 7).astype(np.uint16) * 257), "grey",
        transparency=7 * 257),
    "16-bit RGB": _written(2, 16, lambda rgb, bg: rgb.astype(np.int64) * 257),
    "16-bit RGB, colour key": _written(
        2, 16, lambda rgb, bg: np.where(bg[..., None], [1, 2, 3], rgb) * 257,
        trns=lambda: struct.pack(">HHH", 257, 514, 771)),
    "16-bit RGBA": _written(6, 16, lambda rgb, bg: _rgba(rgb, bg).astype(np.int64) * 257),
    "16-bit grey + alpha": _written(4, 16, lambda rgb, bg: _grey_alpha(rgb, bg).astype(np.int64)
                                    * 257, "grey"),
    "P 256 colours": _palette(256, 8, transparent=False),
    "P with per-entry alpha": _palette(256, 8, transparent=True),
    "P 4-bit (16 colours)": _palette(16, 4, transparent=False),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_png_mode_decodes_to_the_avatar_on_white(tmp_path, avatar, mode):
    rgb, bg = avatar
    path, expected, tolerance = MODES[mode](tmp_path, rgb, bg)
    decoded = load_image(path, crop=None, size=SIDE).transpose(1, 2, 0)  # (H, W, 3)
    diff = np.abs(decoded.astype(int) - expected.astype(int))
    assert (decoded[bg] == 255).all(), "the background must be white"
    if tolerance >= 0:
        assert diff.max() <= tolerance, (mode, diff.max())
    else:  # palettes approximate colours: close on average, and the face is not lost
        assert diff.mean() < (2 if "256" in mode or "alpha" in mode else 6), (mode, diff.mean())
    # the avatar itself is there: as dark and as varied as the reference
    assert abs(decoded[~bg].mean() - expected[~bg].mean()) < 4
    assert decoded[~bg].std() > 0.8 * expected[~bg].std()


# ----------------------------------------------------------------------------- bad files


def _broken_symlink(png: Path) -> None:
    png.unlink()
    png.symlink_to(png.with_name("nowhere.png"))


def _symlink_loop(png: Path) -> None:
    png.unlink()
    png.symlink_to(png.name)  # points at itself


def _directory(png: Path) -> None:
    png.unlink()
    png.mkdir()


def _fifo(png: Path) -> None:  # reading it would block forever
    png.unlink()
    os.mkfifo(png)


def _bomb(png: Path) -> None:  # > 2 * MAX_IMAGE_PIXELS: Pillow raises DecompressionBombError
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 100
    write_blank_png(png, side, side)


def _near_bomb(png: Path) -> None:  # between 1x and 2x MAX_IMAGE_PIXELS: Pillow only warns
    side = int((1.2 * Image.MAX_IMAGE_PIXELS) ** 0.5)
    write_blank_png(png, side, side)


def _csv_huge_field(png: Path) -> None:  # beyond the csv module's field size limit
    png.with_suffix(".csv").write_text('"' + "x" * 200_000 + '", 1, 2\n')


def _csv_broken_symlink(png: Path) -> None:
    csv = png.with_suffix(".csv")
    csv.unlink()
    csv.symlink_to("nowhere.csv")


FILE_FAULTS = {
    # case: (how to break cs000002.png (or its CSV), the file the error names, what it says)
    "broken symlink": (_broken_symlink, ".png", r"image file missing \(broken symlink\)"),
    "symlink loop": (_symlink_loop, ".png", "symlink loop"),
    "directory named x.png": (_directory, ".png", "is a directory"),
    "fifo named x.png": (_fifo, ".png", "not a regular file"),
    "decompression bomb": (_bomb, ".png", "decompression bomb"),
    "decompression bomb warning": (_near_bomb, ".png", "decompression bomb"),
    "CSV with a 200 kB field": (_csv_huge_field, ".csv", "not a CSV file"),
    "CSV a broken symlink": (_csv_broken_symlink, ".csv", r"label file missing \(broken symlink\)"),
}


def _loader_kwargs(tmp_path: Path) -> dict:
    return {"image_size": 8, "crop": CROP, "cache_dir": tmp_path / "cache", "progress": False}


@pytest.mark.parametrize("case", list(FILE_FAULTS))
def test_bad_file_is_a_data_error_naming_it(tmp_path, case):
    break_file, suffix, message = FILE_FAULTS[case]
    write_avatars(tmp_path / "data", 4)
    break_file(tmp_path / "data" / "cs000002.png")
    with pytest.raises(DataError, match=message) as err:
        load_avatar_data("cartoonset", tmp_path / "data", **_loader_kwargs(tmp_path))
    assert f"cs000002{suffix}" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("case", list(FILE_FAULTS))
def test_bad_file_is_skipped_and_counted(tmp_path, case, recwarn):
    break_file, _, message = FILE_FAULTS[case]
    written = write_avatars(tmp_path / "data", 4)
    break_file(tmp_path / "data" / "cs000002.png")
    data = load_avatar_data("cartoonset", tmp_path / "data", on_error="skip",
                            **_loader_kwargs(tmp_path))
    assert data.skipped == 1 and data.ids.tolist() == written[:2] + written[3:]
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_permission_denied_is_a_data_error(tmp_path, monkeypatch):
    write_avatars(tmp_path, 3)
    png, csv = tmp_path / "cs000001.png", tmp_path / "cs000002.csv"
    png.chmod(0)
    csv.chmod(0)
    if os.access(png, os.R_OK):  # root reads anything: make open() answer as for a user
        real_open = builtins.open

        def denying_open(file, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            if str(file) in (str(png), str(csv)):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", denying_open)
        monkeypatch.setattr(io, "open", denying_open)  # pathlib's read_text opens through io
    with pytest.raises(DataError, match=r"cs000001\.png: .*[Pp]ermission denied"):
        decode_files(find_images(tmp_path), crop=CROP, size=8, progress=False)
    decoded = decode_files(find_images(tmp_path), crop=CROP, size=8, on_error="skip",
                           progress=False)
    assert [p.name for p, _ in decoded.skipped] == ["cs000001.png", "cs000002.png"]
    assert "cs000002.csv" in decoded.skipped[1][1] and "ermission denied" in decoded.skipped[1][1]


def test_folder_that_cannot_be_listed_is_named(tmp_path, monkeypatch):
    for part in ("0", "1"):
        write_avatars(tmp_path / part, 2, seed=int(part))
    real_scandir = os.scandir

    def scandir(path=".", *args):  # noqa: ANN001, ANN002, ANN202 -- as after chmod 000 for a user
        if str(path).endswith(os.sep + "1"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match=rf"{tmp_path / '1'}: cannot list folder"):
        find_images(tmp_path)  # before: the folder's images were silently left out


def test_bomb_in_a_worker_pool_is_reported_not_raised(tmp_path):
    write_avatars(tmp_path, 70)  # enough for decode_files to use its process pool
    _bomb(tmp_path / "cs000040.png")
    decoded = decode_files(find_images(tmp_path), crop=CROP, size=8, workers=2,
                           on_error="skip", progress=False)
    assert [p.name for p, _ in decoded.skipped] == ["cs000040.png"]
    assert "decompression bomb" in decoded.skipped[0][1] and len(decoded.images) == 69
