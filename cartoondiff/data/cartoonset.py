"""Read a directory in Cartoon Set's own format: ``csNNNN.png`` + ``csNNNN.csv`` pairs.

Cartoon Set 10k is one flat folder; 100k splits the same pairs over subfolders ``0``..``9``,
so files are found recursively. Each CSV line is ``"name", value, count`` (value 0-based,
count = number of variants); every name, value and count is checked against
``cartoondiff.attributes``. Images are RGBA with a transparent background in the official
archive: they are composited onto white, centre-cropped (360 px, the blog's choice) and
resized with an antialiasing filter. Every PNG colour type and bit depth (16-bit grey, a grey
colour key at 1, 2 or 4 bits: see ``load_image``) gives the same avatar.

Every bad file raises ``DataError`` naming the file and what is wrong: undecodable or
truncated data, a decompression bomb, a broken symlink, a symlink loop, no permission, a
directory or a fifo where a file should be, a malformed CSV. ``decode_files`` can skip
such files instead and report them, so nothing trains silently on bad data.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cartoondiff import attributes
from cartoondiff.runs.errors import UserError
from cartoondiff.runs.files import ReadError, decode_image, read_regular
from cartoondiff.runs.progress import progress_bar

IMAGE_SUFFIX = ".png"
LABEL_SUFFIX = ".csv"
# Below this many files a process pool costs more to start than it saves.
MIN_FILES_FOR_POOL = 64


class DataError(UserError, ValueError):
    """A data file or directory that cannot be used; the message names it."""


def find_images(root: str | Path) -> list[Path]:
    """All ``*.png`` under ``root`` (recursively, for 100k's subfolders), sorted by path."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data directory does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")

    def unlistable(err: OSError) -> None:  # os.walk would silently skip the folder
        raise DataError(f"{err.filename}: cannot list folder ({err.strerror})")

    # os.walk and string sorting rather than Path.rglob and Path sorting: several times
    # faster on 100k files, and this runs on every start to fingerprint the cache.
    # A folder named *.png is listed too, so that it is reported rather than ignored.
    names = sorted(
        os.path.join(folder, name)
        for folder, dirs, files in os.walk(root, onerror=unlistable)
        for name in files + dirs
        if name.endswith(IMAGE_SUFFIX)
    )
    files = [Path(name) for name in names]
    if not files:
        raise DataError(f"{root}: no {IMAGE_SUFFIX} images found (searched recursively)")
    return files


def label_path(image_path: Path) -> Path:
    """The CSV that labels ``image_path`` (same stem, same folder)."""
    return image_path.with_suffix(LABEL_SUFFIX)


def read_labels(csv_path: str | Path) -> list[int]:
    """Parse one Cartoon Set CSV into 18 attribute ids in ``attributes.NAMES`` order.

    Lines may come in any order, but every attribute must appear exactly once with a
    value in range and the variant count the schema expects.
    """
    csv_path = Path(csv_path)
    try:
        # utf-8-sig: a spreadsheet's byte-order mark is not part of the first name
        text = read_regular(csv_path, "label file").decode("utf-8-sig")
    except ReadError as err:
        raise DataError(str(err)) from None
    except UnicodeDecodeError as err:
        raise DataError(f"{csv_path}: cannot read label file ({err})") from None
    try:
        rows = list(csv.reader(text.splitlines(), skipinitialspace=True))
    except csv.Error as err:  # e.g. a field over the csv module's size limit
        raise DataError(f"{csv_path}: not a CSV file ({err})") from None

    ids: list[int | None] = [None] * attributes.NUM_ATTRIBUTES
    for line_no, row in enumerate(rows, start=1):
        if not row or all(not cell.strip() for cell in row):
            continue  # tolerate blank lines (e.g. a trailing newline)
        where = f"{csv_path}:{line_no}"
        if len(row) != 3:
            raise DataError(f"{where}: expected '\"name\", value, count', got {row!r}")
        name = row[0].strip()
        try:
            col = attributes.index(name)
        except attributes.SchemaError:
            raise DataError(f"{where}: unknown attribute {name!r}") from None
        try:
            value, n_variants = int(row[1]), int(row[2])
        except ValueError:
            raise DataError(f"{where}: value and count must be integers, got {row!r}") from None
        expected = attributes.count(name)
        if n_variants != expected:
            raise DataError(
                f"{where}: attribute {name} has count {n_variants}, schema says {expected}"
            )
        if not 0 <= value < expected:
            raise DataError(f"{where}: attribute {name}={value} out of range 0..{expected - 1}")
        if ids[col] is not None:
            raise DataError(f"{where}: attribute {name} given twice")
        ids[col] = value

    missing = [name for name, v in zip(attributes.NAMES, ids) if v is None]
    if missing:
        raise DataError(f"{csv_path}: missing attribute(s) {', '.join(missing)}")
    return [int(v) for v in ids]  # type: ignore[arg-type]


def load_image(path: str | Path, crop: int | None = 360, size: int = 64) -> np.ndarray:
    """Decode one avatar PNG to uint8 (3, size, size).

    Transparency is composited onto white; then a centred ``crop`` x ``crop`` square
    (the largest centred square when ``crop`` is None) is resized to ``size`` with
    Lanczos, which antialiases when shrinking.
    """
    path = Path(path)
    try:
        with decode_image(path) as im:
            _fix_grey_key(im, path)
            width, height = im.size
            side = min(width, height) if crop is None else crop
            if width < side or height < side:
                raise DataError(f"{path}: image is {width}x{height}, smaller than the {side} px "
                                "crop")
            left, top = (width - side) // 2, (height - side) // 2
            # crop before compositing: less work than flattening the whole 500x500 frame
            rgb = _flatten_onto_white(im.crop((left, top, left + side, top + side)))
    except ReadError as err:
        raise DataError(str(err)) from None
    out = rgb.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(out, dtype=np.uint8).transpose(2, 0, 1).copy()  # (3, size, size)


def _fix_grey_key(im: Image.Image, path: Path) -> None:
    """Scale a 1/2/4-bit grey PNG's colour key (tRNS) to the 0..255 Pillow gives its pixels.

    Pillow scales the pixels (a 2-bit 1 becomes 85) but keeps the key as stored (1), so the
    background would stay opaque grey instead of becoming white.
    """
    key = im.info.get("transparency")
    if im.format != "PNG" or im.mode != "L" or not isinstance(key, int):
        return
    with open(path, "rb") as f:
        header = f.read(26)  # signature (8), IHDR length and type (8), width, height, depth
    depth = header[24] if len(header) == 26 else 8
    if depth in (1, 2, 4):
        im.info["transparency"] = key * 255 // ((1 << depth) - 1)


def _flatten_onto_white(im: Image.Image) -> Image.Image:
    """RGB image with any alpha (RGBA, LA, palette transparency) composited onto white."""
    if im.mode.startswith("I"):  # 16-bit grey: I;16, I;16B, or I in older Pillow
        im = _grey16_to_8bit(im)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if not has_alpha:
        return im.convert("RGB")
    rgba = im.convert("RGBA")
    out = Image.new("RGB", rgba.size, (255, 255, 255))
    out.paste(rgba, mask=rgba.getchannel("A"))  # src * alpha + white * (1 - alpha)
    return out


def _grey16_to_8bit(im: Image.Image) -> Image.Image:
    """16-bit grey -> L (or LA with its colour key as alpha); convert("L") would clip to white."""
    values = np.asarray(im).astype(np.int64)  # (H, W), 0..65535
    grey = Image.fromarray(((values.clip(0, 65535) * 255 + 32767) // 65535).astype(np.uint8))
    key = im.info.get("transparency")
    if isinstance(key, int):
        grey.putalpha(Image.fromarray(np.where(values == key, 0, 255).astype(np.uint8)))
    return grey


@dataclass(frozen=True)
class Decoded:
    """What ``decode_files`` produced.

    images: uint8 (N, 3, size, size); ids: int64 (N, 18) or None when unlabeled;
    skipped: (file, reason) for each file left out.
    """

    images: np.ndarray
    ids: np.ndarray | None
    skipped: list[tuple[Path, str]]


Job = tuple[Path, int | None, int, bool]  # (path, crop, size, labeled)
Result = tuple[np.ndarray | None, list[int] | None, str]  # (image, ids, error or "")


def _decode_one(job: Job) -> Result:
    """Worker: decode one file; a DataError comes back as its message, not an exception."""
    path, crop, size, labeled = job
    try:
        ids = read_labels(label_path(path)) if labeled else None
        return load_image(path, crop=crop, size=size), ids, ""
    except DataError as err:
        return None, None, str(err)


def _results(jobs: list[Job], workers: int) -> Iterator[Result]:
    """Decode ``jobs`` in order, in this process or a small pool of forked workers."""
    if workers <= 1 or len(jobs) < MIN_FILES_FOR_POOL:
        yield from map(_decode_one, jobs)
        return
    # fork: workers inherit the imported modules instead of re-importing torch (seconds each)
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ctx.Pool(workers) as pool:
        yield from pool.imap(_decode_one, jobs, chunksize=32)


def decode_files(
    files: Sequence[Path],
    crop: int | None = 360,
    size: int = 64,
    labeled: bool = True,
    on_error: str = "raise",
    workers: int = 1,
    progress: bool = True,
) -> Decoded:
    """Decode every file once (with a progress bar) into one uint8 array.

    on_error="raise" stops at the first bad file with its DataError; "skip" leaves bad
    files out and lists them in ``Decoded.skipped`` (the caller reports them).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not files:
        raise DataError("no image files to decode")
    jobs = [(Path(f), crop, size, labeled) for f in files]
    images = np.empty((len(jobs), 3, size, size), dtype=np.uint8)
    ids = np.empty((len(jobs), attributes.NUM_ATTRIBUTES), dtype=np.int64) if labeled else None
    n = 0  # files kept
    skipped: list[tuple[Path, str]] = []
    results = _results(jobs, workers)
    bar = progress_bar(results, total=len(jobs), desc="decoding PNGs", unit="img",
                       enabled=progress)
    try:
        for (path, *_), (image, label, error) in zip(jobs, bar):
            if error:
                if on_error == "raise":
                    raise DataError(error)
                skipped.append((path, error))
                continue
            images[n] = image
            if ids is not None:
                ids[n] = label
            n += 1
    finally:
        bar.close()
        results.close()  # stops the worker pool at once when we raise early
    if not n:
        raise DataError(f"all {len(jobs)} files were bad; first: {skipped[0][1]}")
    return Decoded(images[:n], None if ids is None else ids[:n], skipped)
