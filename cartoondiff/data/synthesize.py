"""Synthetic Cartoon-Set-style avatars drawn with Pillow from the 18 attribute ids.

Every avatar is a pure function of its ids: flat colours, dark outlines, white ground,
the face placed in Cartoon Set's 500x500 frame as measured on real images. Every value of
every attribute changes the drawing: colours (face, hair, eyes, glasses), 111 hair styles
(bald, horseshoe, two puffs, then 9 tops x 4 back lengths x 3 textures), 7 face outlines
x 3 chin lengths, 14 beards, 11 glasses, and smaller changes for the eye and eyebrow
attributes. The last value means "none": ``glasses=11`` (GLASSES_NONE) and
``facial_hair=14`` (FACIAL_HAIR_NONE); glasses_color shows only with glasses.

The drawing itself lives in ``avatar_drawing``. It happens at ``ss`` times the target size
on a canvas that shows only the crop window, then a box filter reduces it:
``render_avatar(ids, 64, crop=360)`` matches a centre crop + resize of the 500 px render
without ever drawing 500 px.

CLI: ``python -m cartoondiff.data.synthesize out=DIR n=N [seed=S] [size=500]``
"""

from __future__ import annotations

import math
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cartoondiff.attributes import ATTRIBUTES, COUNTS, NUM_ATTRIBUTES, validate
from cartoondiff.data.avatar_drawing import (  # noqa: F401 -- re-exported for users
    FACE_COLORS,
    FACIAL_HAIR_NONE,
    FRAME,
    GLASSES_NONE,
    HAIR_COLORS,
    WHITE,
    Pen,
    paint,
)
from cartoondiff.runs import cli
from cartoondiff.runs.errors import UserError, is_int, require
from cartoondiff.runs.files import check_folder
from cartoondiff.runs.progress import progress_bar

RENDERER_VERSION = 1  # part of the cache key: bump whenever the drawing changes
MAX_N = 10**7  # the names' 7-digit index (avatar_name)


class SynthesisError(UserError, ValueError):
    """A bad argument to the renderer (size, crop, n, seed)."""


def _render(ids: Sequence[int], size: int, crop: int | None, mode: str = "RGB") -> Image.Image:
    window = FRAME if crop is None else crop
    ss = max(2, math.ceil(256 / size))  # smooth edges, yet 10k 64 px images render fast
    background = (255, 255, 255, 0) if mode == "RGBA" else WHITE
    canvas = Image.new(mode, (size * ss, size * ss), background)
    paint(Pen(canvas, (FRAME - window) // 2, size * ss / window), ids)  # reader's crop box
    return canvas.reduce(ss)


def _check(size: int, crop: int | None) -> None:
    if not 1 <= size <= 4096:
        raise SynthesisError(f"size must be in 1..4096, got {size}")
    if crop is not None and not 1 <= crop <= FRAME:
        raise SynthesisError(f"crop must be in 1..{FRAME} (or None), got {crop}")


def sample_ids(seed: int, index: int) -> list[int]:
    """The 18 attribute ids of avatar ``index`` in set ``seed``: uniform per attribute."""
    rng = random.Random(f"{seed}:{index}")  # private stream: no global RNG, order-free
    return [rng.randrange(count) for count in COUNTS]


def render_avatar(ids: Sequence[int], size: int = 500, crop: int | None = None) -> Image.Image:
    """Draw one avatar as an RGB ``size`` x ``size`` image on white.

    Without ``crop`` the whole 500 px Cartoon Set frame is shown; with ``crop`` only its
    centred ``crop`` px square, as a reader would after centre crop + resize.
    """
    _check(size, crop)
    return _render(validate(ids).tolist(), size, crop)  # accepts lists, arrays, tensors


def render_arrays(n: int, seed: int, size: int, crop: int | None = 360, progress: bool = True,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Render avatars 0..n-1 of set ``seed``: uint8 images (n, 3, size, size), int64 ids (n, 18)."""
    _check(size, crop)
    if n < 0:
        raise SynthesisError(f"n must be >= 0, got {n}")
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    ids = np.empty((n, NUM_ATTRIBUTES), dtype=np.int64)
    for i in progress_bar(range(n), desc="rendering avatars", enabled=progress, unit="img"):
        ids[i] = sample_ids(seed, i)
        images[i] = np.asarray(_render(ids[i].tolist(), size, crop)).transpose(2, 0, 1)
    return images, ids


def avatar_name(seed: int, index: int) -> str:
    """File stem of avatar ``index`` of set ``seed``: ``cs`` + seed + 7-digit index.

    Cartoon Set names are ``cs`` + digits; this keeps that form and stays unique across
    seeds (the index always takes the last 7 digits).
    """
    if seed < 0 or not 0 <= index < MAX_N:
        raise SynthesisError(f"need seed >= 0 and 0 <= index < 10**7, got {seed}, {index}")
    return f"cs{seed}{index:07d}"


def write_cartoonset(out_dir: Path, n: int, seed: int, size: int = 500) -> None:
    """Write ``n`` avatars in Cartoon Set's format: ``NAME.png`` (RGBA, transparent ground)
    and ``NAME.csv`` with one ``"name", value, count`` line per attribute."""
    _check(size, None)
    if n < 0 or seed < 0:
        raise SynthesisError(f"need n >= 0 and seed >= 0, got n={n}, seed={seed}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        ids = sample_ids(seed, i)
        stem = avatar_name(seed, i)
        _render(ids, size, None, mode="RGBA").save(out_dir / f"{stem}.png")
        lines = [f'"{name}", {v}, {c}\n' for (name, c), v in zip(ATTRIBUTES, ids)]
        (out_dir / f"{stem}.csv").write_text("".join(lines))


def check_options(opts: dict) -> Path:
    """``out``, ``n``, ``seed`` and ``size`` checked before any file is written: integers,
    ``out`` a folder that can be written, ``n`` within the names' range and the disk's free
    space."""
    for key in ("n", "seed", "size"):
        require(is_int(opts[key]), key, opts[key], "an integer")
    n, size, seed = opts["n"], opts["size"], opts["seed"]
    require(0 <= n <= MAX_N, "n", n, f"an integer in [0, {MAX_N}] (the file names' 7-digit index)")
    require(seed >= 0, "seed", seed, "an integer >= 0")
    _check(size, None)
    out = check_folder("out", opts["out"])
    existing = next(folder for folder in (out, *out.parents) if folder.exists())
    # a PNG (measured: 17 kB at 500 px, 3 kB at 64 px with its CSV) and a CSV, each at least
    # one 4 kB block
    free, need = shutil.disk_usage(existing).free, n * (8192 + size * size // 10)
    if need > free:
        raise SynthesisError(f"n={n} is invalid: {n} avatars of {size} px take about "
                             f"{need / 2**30:.1f} GiB and {existing} has {free / 2**30:.1f} GiB "
                             "free")
    return out


USAGE = "python -m cartoondiff.data.synthesize out=DIR n=1000 [seed=0] [size=500]"
OPTIONS = {
    "out": cli.Option(None, "the folder to write csN.png + csN.csv pairs into; required", "DIR"),
    "n": cli.Option(None, "how many avatars; required", "N"),
    "seed": cli.Option(0, "which set: avatar i of set s is always the same drawing"),
    "size": cli.Option(FRAME, "image side in px (Cartoon Set's is 500)"),
}


def main(argv: Sequence[str]) -> None:
    """CLI: write a synthetic Cartoon-Set-format directory."""
    args = cli.parse(argv, OPTIONS, USAGE, about=__doc__,
                     example="python -m cartoondiff.data.synthesize out=avatars n=1000 seed=0")
    opts = args.options
    if args.positional or opts["out"] is None or opts["n"] is None:
        raise cli.UsageError(f"out=DIR and n=N are required (usage: {USAGE})")
    out = check_options(opts)
    write_cartoonset(out, opts["n"], opts["seed"], opts["size"])
    print(f"wrote {opts['n']} avatars to {opts['out']}")


if __name__ == "__main__":
    cli.execute(main)
