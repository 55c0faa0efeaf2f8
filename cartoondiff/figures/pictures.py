"""Sample-grid pictures (Pillow): a run's grid after an epoch, runs side by side, the blog's
figures of an experiment, and the forward process of a config."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import OmegaConf
from PIL import Image, ImageDraw, ImageFont

from cartoondiff.runs import cli
from cartoondiff.runs.errors import is_int, is_number
from cartoondiff.runs.files import check_output, save_image_atomic
from cartoondiff.runs.folder import RunFolder
from cartoondiff.runs.naming import run_title
from cartoondiff.runs.records import RunFolderError, open_image, read_run_config

if TYPE_CHECKING:
    from cartoondiff.data.module import AvatarDataModule

FIGURE_NAME = re.compile(r"[A-Za-z0-9][\w.+-]{0,99}")  # a plain file name, no path
TITLE_SIZE = 24  # px of a title: a grid's row labels, enlarged twice, have 22 (grids.FONT_SIZE)
LABEL_SIZE = 20  # px of a column label
MARGIN = 8  # px around a title


def epoch_grids(run_dir: Path) -> dict[int, Path]:
    """Epoch -> sample grid PNG of a run directory."""
    found = RunFolder(run_dir).epoch_grids()
    if not found:
        raise RunFolderError(f"{run_dir}: no samples/epochNNN.png grids (is this a run folder?)")
    return found


def wrap(text: str, font: ImageFont.FreeTypeFont, width: float) -> str:
    """``text`` in lines of at most ``width`` px, broken after spaces and commas (a run name
    such as ``attention=mha4,tau.projections=2x`` has no spaces); a longer word keeps its
    line."""
    lines = [""]
    for word in re.split(r"(?<=[ ,])", text):
        if lines[-1] and font.getlength(lines[-1] + word) > width:
            lines.append("")
        lines[-1] += word
    return "\n".join(line.rstrip() for line in lines)


def titled(image: Image.Image, title: str, scale: int = 2,
           columns: Sequence[str] = ()) -> Image.Image:
    """``image`` enlarged ``scale`` times (nearest, so pixels stay visible) under a title as
    large as a grid's row labels enlarged twice, wrapped to the image's width (widened for a word
    longer than that) and, with ``columns``, a label over each of its equal columns."""
    image = image.convert("RGB").resize((image.width * scale, image.height * scale),
                                        Image.Resampling.NEAREST)
    font = ImageFont.load_default(size=TITLE_SIZE)
    small = ImageFont.load_default(size=LABEL_SIZE)
    text = wrap(title, font, image.width - 2 * MARGIN)
    _, _, right, bottom = ImageDraw.Draw(image).multiline_textbbox((0, 0), text, font=font)
    top = bottom + 2 * MARGIN + (LABEL_SIZE + MARGIN if columns else 0)
    out = Image.new("RGB", (max(image.width, round(right) + 2 * MARGIN), top + image.height),
                    "white")
    out.paste(image, (0, top))
    draw = ImageDraw.Draw(out)
    draw.multiline_text((MARGIN, MARGIN), text, fill="black", font=font)
    for i, label in enumerate(columns):
        draw.text(((i + 0.5) * image.width / len(columns), top - MARGIN // 2), label,
                  fill="black", font=small, anchor="md")
    return out


def grid_figure(run_dir: Path, epoch: int | None = None) -> Image.Image:
    """The run's grid after ``epoch`` (None: its last), titled with the run and the epoch."""
    grids = epoch_grids(run_dir)
    epoch = max(grids) if epoch is None else epoch
    if epoch not in grids:
        raise RunFolderError(f"{run_dir} has no grid for epoch {epoch}; it has {list(grids)}")
    return titled(open_image(grids[epoch]), f"{run_title(run_dir)} - epoch {epoch}")


def compare_figure(run_dirs: Sequence[Path], epoch: int | None = None) -> Image.Image:
    """Each run's ``grid_figure`` side by side, 32 px apart."""
    panels = [grid_figure(Path(d), epoch) for d in run_dirs]
    gap = 32
    out = Image.new("RGB", (sum(p.width + gap for p in panels) - gap,
                            max(p.height for p in panels)), "white")
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + gap
    return out


def blog_figures(run_dir: Path, out_dir: Path) -> list[Path]:
    """Each figure of the run's experiment (config ``figures``: name -> epoch) as a titled
    grid ``out_dir/NAME.png``; the nearest earlier epoch when the run has not reached it."""
    cfg_path = RunFolder(run_dir).config
    wanted = read_run_config(run_dir).get("figures")
    if not wanted:
        raise RunFolderError(f"{run_dir}: its config names no blog figures (run an experiment: "
                             "python run.py experiment=NAME ...)")
    # The run folder is untrusted: every name a plain file name (it cannot leave out_dir),
    # every epoch an integer, all checked before anything is written.
    if not isinstance(wanted, dict):
        raise RunFolderError(f"{cfg_path}: figures={wanted!r} is invalid: expected a mapping "
                             "of figure names to epochs")
    for name, epoch in wanted.items():
        if not (isinstance(name, str) and FIGURE_NAME.fullmatch(name)):
            raise RunFolderError(f"{cfg_path}: figures.{name!r} is invalid: expected a plain "
                                 "file name (letters, digits, _ . + -), written inside out=")
        if not (is_int(epoch) and epoch >= 0):
            raise RunFolderError(f"{cfg_path}: figures.{name}={epoch!r} is invalid: expected "
                                 "an epoch, an integer >= 0")
        check_output("out", Path(out_dir) / f"{name}.png", inputs=[run_dir])
    grids = epoch_grids(run_dir)
    written = []
    for name, epoch in wanted.items():
        have = max((e for e in grids if e <= epoch), default=min(grids))
        note = "" if have == epoch else f" (the blog's epoch {epoch} is not in this run)"
        title = f"{name}: {run_title(run_dir)} - epoch {have}{note}"
        path = save_image_atomic(titled(open_image(grids[have]), title),
                                 Path(out_dir) / f"{name}.png")
        written.append(path)
    return written


def schedule_words(node: Mapping[str, Any]) -> str:
    """A ``noise_schedule`` config node in words: ``linear schedule, T=1000, beta 0.0001 to
    0.02`` (the function its ``_target_`` names, without ``_betas``, then its arguments)."""
    values = {k: v for k, v in node.items() if k != "_target_"}
    kind = str(node.get("_target_", "")).rsplit(".", 1)[-1].removesuffix("_betas")
    words = [f"{kind} schedule".strip()]
    if "T" in values:
        words.append(f"T={values.pop('T')}")
    if {"beta_start", "beta_end"} <= values.keys():
        words.append(f"beta {values.pop('beta_start'):g} to {values.pop('beta_end'):g}")
    words += [f"{k}={v:g}" if is_number(v) else f"{k}={v}" for k, v in values.items()]
    return ", ".join(words)


def first_avatars(data: AvatarDataModule, n: int = 4) -> np.ndarray:
    """The first ``n`` avatars of a data module's set, uint8 (n, 3, H, W): those training
    draws in its forward-process picture, read or rendered alone, not with the whole set."""
    if data.source == "synthetic":
        from cartoondiff.data.synthesize import render_arrays

        return render_arrays(min(n, data.n), data.seed, data.image_size, data.crop,
                             progress=False)[0]
    from cartoondiff.data.cartoonset import find_images, load_image

    files = find_images(Path(data.root).expanduser())[:n]
    return np.stack([load_image(f, data.crop, data.image_size) for f in files])


def forward_figure(overrides: Sequence[str]) -> Image.Image:
    """The forward-process picture of the config given by ``overrides`` (no training): four
    avatars (rows) at eight steps t (columns, each labelled), titled with the schedule."""
    import torch

    from cartoondiff.config import build, build_diffusion
    from cartoondiff.inference.grids import MIN_CELL, forward_process_image

    cfg = cli.compose(overrides)
    diffusion, data = build_diffusion(cfg), build(cfg, "data")  # each value checked first
    images = torch.from_numpy(first_avatars(data))  # uint8 (4, 3, H, W)
    picture, ts = forward_process_image(diffusion, images, data.normalize)
    schedule = OmegaConf.to_container(cfg.noise_schedule, resolve=True)
    return titled(picture, f"forward process q(x_t | x_0): {schedule_words(schedule)}",
                  scale=max(2, math.ceil(MIN_CELL / data.image_size)),
                  columns=[f"t={t}" for t in ts])
