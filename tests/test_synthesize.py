"""The synthetic renderer: determinism, attribute visibility, crop geometry, file format, CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cartoondiff import attributes
from cartoondiff.data import synthesize as syn

REPO = Path(__file__).resolve().parents[1]
FULL = 100  # test renders of the whole 500 frame at 100 px: 1 px = 5 frame px
CSV_LINE = re.compile(r'^"([a-z_]+)", (\d+), (\d+)$')


def _base(**changes: int) -> list[int]:
    """A fixed avatar without glasses or facial hair, with ``changes`` applied."""
    ids = syn.sample_ids(5, 0)
    ids[attributes.index("glasses")] = syn.GLASSES_NONE
    ids[attributes.index("facial_hair")] = syn.FACIAL_HAIR_NONE
    ids[attributes.index("hair")] = 40  # a short style with a big cap
    for name, value in changes.items():
        ids[attributes.index(name)] = value
    return ids


def _full(ids: list[int]) -> np.ndarray:
    return np.asarray(syn.render_avatar(ids, FULL)).astype(np.int16)  # (H, W, 3)


def _changed_box(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) in 500-frame px of pixels that differ clearly."""
    ys, xs = np.nonzero(np.abs(a - b).max(-1) > 40)
    assert len(xs), "the change did not alter the picture"
    k = syn.FRAME / FULL
    return int(xs.min() * k), int(ys.min() * k), int((xs.max() + 1) * k), int((ys.max() + 1) * k)


def test_sample_ids_deterministic_uniform_and_valid() -> None:
    ids = [syn.sample_ids(7, i) for i in range(300)]
    assert ids == [syn.sample_ids(7, i) for i in range(300)]
    assert ids != [syn.sample_ids(8, i) for i in range(300)]
    table = attributes.validate(ids)  # raises if any id is out of range
    for col, count in enumerate(attributes.COUNTS):  # every variant of small attributes occurs
        if count <= 15:
            assert set(table[:, col].tolist()) == set(range(count)), attributes.NAMES[col]


def test_render_arrays_deterministic_shapes_and_white_ground() -> None:
    images, ids = syn.render_arrays(6, seed=3, size=32, progress=False)
    again, ids2 = syn.render_arrays(6, seed=3, size=32, progress=False)
    assert images.shape == (6, 3, 32, 32) and images.dtype == np.uint8
    assert ids.shape == (6, 18) and ids.dtype == np.int64
    assert np.array_equal(images, again) and np.array_equal(ids, ids2)
    assert ids.tolist() == [syn.sample_ids(3, i) for i in range(6)]
    assert (images[:, :, 0, 0] == 255).all() and (images[:, :, -1, -1] == 255).all()
    other, _ = syn.render_arrays(6, seed=4, size=32, progress=False)
    assert not np.array_equal(images, other)
    # the same avatar, rendered alone, gives the same pixels
    one = np.asarray(syn.render_avatar(ids[2], 32, crop=360)).transpose(2, 0, 1)  # numpy ids
    assert np.array_equal(one, images[2])


@pytest.mark.parametrize("name", attributes.NAMES)
def test_every_value_of_every_attribute_draws_differently(name: str) -> None:
    # clear round glasses so glasses_color and the eyes both show; a beard only when swept
    base = _base(glasses=0) if name != "glasses" else _base()
    seen = set()
    for value in range(attributes.count(name)):
        ids = list(base)
        ids[attributes.index(name)] = value
        seen.add(syn.render_avatar(ids, 64, crop=360).tobytes())
    assert len(seen) == attributes.count(name)


def test_colours_change_their_own_regions() -> None:
    base = _base(hair_color=0, face_color=0)
    x0, y0, x1, y1 = _changed_box(_full(base), _full(_base(hair_color=7, face_color=0)))
    assert y0 < 130  # the hair on the crown changed
    hair_a, hair_b = _full(base), _full(_base(hair_color=7, face_color=0))
    cheek = (300 // 5, 205 // 5)  # (row, col) of a cheek point, below the eye
    assert np.array_equal(hair_a[cheek], hair_b[cheek])
    face_b = _full(_base(hair_color=0, face_color=9))
    assert np.abs(hair_a[cheek] - face_b[cheek]).sum() > 60  # skin colour changed...
    crown = (135 // 5, 215 // 5)  # left of the parting, away from the shine
    assert np.array_equal(hair_a[crown], face_b[crown])  # ...the hair did not
    # skin and hair pixels carry the palette colours exactly (flat fills)
    assert tuple(face_b[cheek]) == syn.FACE_COLORS[9]
    assert tuple(hair_b[crown]) == syn.HAIR_COLORS[7]


@pytest.mark.parametrize(
    ("name", "before", "after", "region"),
    [
        ("eye_color", 0, 4, (185, 240, 315, 290)),  # only inside the eyes
        ("glasses", syn.GLASSES_NONE, 1, (140, 220, 360, 310)),  # a band across the eyes
        ("facial_hair", syn.FACIAL_HAIR_NONE, 0, (140, 250, 360, 450)),  # the lower face
        ("hair", 40, 100, (0, 0, 500, 330)),  # above the mouth, around the head
    ],
)
def test_attribute_changes_stay_in_their_region(
    name: str, before: int, after: int, region: tuple[int, int, int, int]
) -> None:
    x0, y0, x1, y1 = _changed_box(_full(_base(**{name: before})), _full(_base(**{name: after})))
    rx0, ry0, rx1, ry1 = region
    assert rx0 <= x0 and ry0 <= y0 and x1 <= rx1 and y1 <= ry1, (x0, y0, x1, y1)


def test_hair_colour_region_is_large() -> None:
    images, ids = syn.render_arrays(40, seed=1, size=64, progress=False)
    fractions = []
    for image, row in zip(images.astype(np.int16), ids):
        hair = np.array(syn.HAIR_COLORS[row[attributes.index("hair_color")]])[:, None, None]
        fractions.append((np.abs(image - hair).sum(0) < 24).mean())
    assert np.median(fractions) > 0.1  # at least a tenth of the 64x64 crop is flat hair colour


def test_crop_render_matches_crop_of_full_render() -> None:
    for i in range(3):
        ids = syn.sample_ids(2, i)
        direct = np.asarray(syn.render_avatar(ids, 64, crop=360)).astype(float)
        full = syn.render_avatar(ids, 500)
        assert full.size == (500, 500) and full.mode == "RGB"
        ref = np.asarray(full.resize((64, 64), Image.Resampling.LANCZOS, box=(70, 70, 430, 430)))
        assert np.abs(direct - ref).mean() < 6.0


def test_write_cartoonset_format(tmp_path: Path) -> None:
    syn.write_cartoonset(tmp_path / "out", n=3, seed=12)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    stems = [syn.avatar_name(12, i) for i in range(3)]
    assert files == sorted([f"{s}.csv" for s in stems] + [f"{s}.png" for s in stems])
    assert all(re.fullmatch(r"cs\d+", s) for s in stems) and len(set(stems)) == 3
    for i, stem in enumerate(stems):
        lines = (tmp_path / "out" / f"{stem}.csv").read_text().splitlines()
        parsed = [CSV_LINE.match(line) for line in lines]
        assert all(parsed), lines
        assert [m.group(1) for m in parsed] == list(attributes.NAMES)
        assert [int(m.group(3)) for m in parsed] == list(attributes.COUNTS)
        assert [int(m.group(2)) for m in parsed] == syn.sample_ids(12, i)
        with Image.open(tmp_path / "out" / f"{stem}.png") as im:
            assert im.mode == "RGBA" and im.size == (500, 500)
            alpha = np.asarray(im)[..., 3]
        assert alpha[0, 0] == alpha[0, -1] == alpha[-1, 0] == alpha[-1, -1] == 0
        assert alpha[250, 250] == 255


def test_bad_input_is_a_clear_value_error() -> None:
    with pytest.raises(attributes.SchemaError, match="hair"):
        syn.render_avatar(_base(hair=111))
    with pytest.raises(syn.SynthesisError, match="crop"):
        syn.render_avatar(_base(), 64, crop=600)
    with pytest.raises(syn.SynthesisError, match="size"):
        syn.render_arrays(2, seed=0, size=0)
    with pytest.raises(ValueError, match="seed"):
        syn.avatar_name(-1, 0)
    with pytest.raises(syn.SynthesisError, match="n >= 0"):
        syn.write_cartoonset(Path("unused"), n=-1, seed=0)


def test_cli_writes_a_directory(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "cartoondiff.data.synthesize", "--out", str(out), "--n", "2",
           "--seed", "1", "--size", "64"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(list(out.glob("cs*.png"))) == 2 and len(list(out.glob("cs*.csv"))) == 2
    with Image.open(next(out.glob("*.png"))) as im:
        assert im.size == (64, 64) and im.mode == "RGBA"
    bad = subprocess.run(cmd[:-1] + ["0"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "size" in bad.stderr
