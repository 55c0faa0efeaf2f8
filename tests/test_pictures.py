"""Sample-grid pictures a paper can print: no text cut, titles as large as the row labels,
the forward process labelled and drawn from the four avatars it shows."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageFont

from cartoondiff import figures
from cartoondiff.data.module import AvatarDataModule
from cartoondiff.figures.pictures import first_avatars, schedule_words, titled
from cartoondiff.inference.grids import FONT_SIZE, HEADER, labeled_grid

LONG = "hair_color=7, hair=36, glasses_color=11, facial_hair=14, eye_eyebrow_distance=2"


def ink(picture: Image.Image) -> np.ndarray:
    """Where a picture is not white: bool (H, W)."""
    return np.asarray(picture.convert("L")) < 200


def test_a_labeled_grids_header_and_labels_are_never_cut():
    """Two sample columns of 16 px are narrower than their header (it was cut at "columr"),
    and a label wider than the old fixed 150 px label column ran under the grid."""
    images = torch.full((2 * 2, 3, 16, 16), 255, dtype=torch.uint8)  # white cells: only text
    picture = labeled_grid(images, 2, [LONG, "short"], asked_for=images[:2])
    header = ink(picture)[:HEADER]
    assert header.any() and not header[:, -3:].any(), "the header ends inside the picture"
    unlabeled = labeled_grid(images, 2, ["", ""], asked_for=images[:2])
    font = ImageFont.load_default(size=FONT_SIZE)
    assert picture.width - unlabeled.width >= font.getlength(LONG), "a column as wide as it"


def test_a_title_is_as_large_as_the_row_labels_and_wraps_instead_of_being_cut():
    grid = Image.new("RGB", (150, 80), "white")
    picture = titled(grid, "fig5: attention=mha4,tau.projections=2x - epoch 3 (the blog's epoch "
                           "39 is not in this run)")
    assert picture.width == 2 * grid.width, "wrapped to the enlarged grid's width"
    rows = np.flatnonzero(ink(picture).any(axis=1))
    assert rows.max() - rows.min() > 3 * 20, "three or more lines of about 24 px"
    assert not ink(picture)[:, -3:].any()
    red = Image.new("RGB", (100, 60), "red")
    assert np.array_equal(np.asarray(titled(red, "a run"))[-120:],
                          np.asarray(red.resize((200, 120))))  # the grid whole, enlarged


def test_column_labels_sit_over_their_columns():
    picture = titled(Image.new("RGB", (4 * 40, 40), "white"), "", columns=["1", "2", "3", "4"])
    labels = ink(picture)  # (H, 320): only the labels are drawn
    for i in range(4):
        inked = np.flatnonzero(labels[:, 80 * i:80 * (i + 1)].any(axis=0))
        assert inked.size and abs(inked.mean() - 40) < 8, f"column {i}'s label is centred"


def test_a_schedule_is_titled_in_words():
    linear = {"_target_": "cartoondiff.diffusion.schedules.linear_betas", "T": 1000,
              "beta_start": 1e-4, "beta_end": 0.02}
    assert schedule_words(linear) == "linear schedule, T=1000, beta 0.0001 to 0.02"
    cosine = {"_target_": "cartoondiff.diffusion.schedules.cosine_betas", "T": 500, "s": 0.008}
    assert schedule_words(cosine) == "cosine schedule, T=500, s=0.008"


def test_the_forward_figure_draws_the_sets_first_avatars_without_loading_the_set(tmp_path):
    cache = tmp_path / "cache"
    out = figures.main(["forward", f"out={tmp_path / 'f.png'}", "data.image_size=16",
                        f"data.cache_dir={cache}"])
    assert not cache.exists(), "the 10,000-avatar set was neither rendered nor cached"
    picture = Image.open(out)
    assert picture.width == (8 * 18 + 2) * 4  # eight columns of t, cells enlarged to 64+ px
    assert picture.height > (4 * 18 + 2) * 4 + 2 * 20, "a title and a row of t labels on top"
    data = AvatarDataModule(n=8, image_size=16, cache_dir=str(tmp_path / "small"), batch_size=8)
    assert np.array_equal(first_avatars(data), data.setup().data.images[:4].numpy())
