"""Blog-style figures from run directories, one command each.

    python -m cartoondiff.figures grid RUN_DIR [epoch=N] [out=fig.png]
    python -m cartoondiff.figures compare RUN_DIR RUN_DIR ... [epoch=N] [out=fig.png]
    python -m cartoondiff.figures forward [out=fig.png] [hydra overrides ...]
    python -m cartoondiff.figures curves RUN_DIR ... [key=train/loss] [smooth=0.6] [from_step=0]
        [out=fig.png]
    python -m cartoondiff.figures blog RUN_DIR [out=DIR]

``grid`` takes a run's sample grid after epoch N (0-based, as the blog counts: "epoch 0" is
the grid after the first pass over the data; default: the last epoch), adds a title and
writes it. ``compare`` puts several runs' grids at the same epoch side by side, titled with
each run's name. ``forward`` draws the forward-process picture for a config without training
(the blog's advice: look at the noise level first). ``curves`` plots one logged metric
against step, one line per experiment (runs of the same W&B group, i.e. seeds, are
averaged), smoothed like W&B's slider; losses get a log axis. ``from_step`` drops the
first steps, whose large early losses otherwise flatten the differences that matter.
``blog`` writes every blog figure the run's experiment redraws (its ``figures`` config:
``DIR/fig5.png`` is the grid of epoch 39 for ``fig03_05_vanilla_pm1``); a run that stopped
earlier (``scale=cpu``) shows its nearest earlier epoch, and the title says so.
"""

from __future__ import annotations

import logging
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf
from PIL import Image, ImageDraw, ImageFont

from cartoondiff import cli
from cartoondiff.config import build, build_diffusion
from cartoondiff.errors import ArgumentError, is_int
from cartoondiff.files import check_output, save_image_atomic
from cartoondiff.inference.grids import forward_process_image
from cartoondiff.plots import ema, line_chart
from cartoondiff.run_folder import RunFolder
from cartoondiff.tracking import (
    RunFolderError,
    distinct_folders,
    number,
    open_image,
    read_run_config,
    read_run_metrics,
)

log = logging.getLogger(__name__)

GRID_NAME = re.compile(r"epoch(\d+)\.png$")
FIGURE_NAME = re.compile(r"[A-Za-z0-9][\w.+-]{0,99}")  # a plain file name, no path
SWEEP_GROUP_PREFIX = "sweep-"  # run_naming's group of a plain sweep
_NAME_PARTS = re.compile(r",(?=[\w.+~/-]+=)")  # "a=1,b=[1,2]" -> "a=1", "b=[1,2]"


def epoch_grids(run_dir: Path) -> dict[int, Path]:
    """Epoch -> sample grid PNG of a run directory."""
    found = RunFolder(run_dir).epoch_grids()
    if not found:
        raise RunFolderError(f"{run_dir}: no samples/epochNNN.png grids (is this a run folder?)")
    return found


def pick_grid(run_dir: Path, epoch: int | None) -> tuple[int, Path]:
    grids = epoch_grids(run_dir)
    if epoch is None:
        epoch = max(grids)
    if epoch not in grids:
        raise RunFolderError(f"{run_dir} has no grid for epoch {epoch}; it has {list(grids)}")
    return epoch, grids[epoch]


def run_title(run_dir: Path, config: dict | None = None) -> str:
    """Which experiment a run folder is, as W&B groups it: runs with the same title are seeds
    of one experiment (the report and the curves average them).

    An experiment's runs: its group (``fig12_tau2x-cpu``). A sweep's runs: their swept keys
    without the seed (``attention=mha4,tau.projections=2x``). Else the run's name, or the folder.
    ``config``: the run's config.yaml when the caller has read it (``read_run_config``).
    """
    logger = (read_run_config(run_dir) if config is None else config).get("logger")
    logger = logger if isinstance(logger, dict) else {}
    # a name or group that is not a plain value (a list, a mapping) is ignored: the folder's
    group, name = (v if isinstance(v, str | int) and not isinstance(v, bool) else None
                   for v in (logger.get("group"), logger.get("name")))
    if group and not str(group).startswith(SWEEP_GROUP_PREFIX):
        return str(group)
    if name:
        return ",".join(p for p in _NAME_PARTS.split(str(name))
                        if not p.startswith("seed=")) or str(group or name)
    return str(group or Path(run_dir).name)


def titled(image: Image.Image, title: str, scale: int = 2) -> Image.Image:
    """``image`` enlarged ``scale`` times (nearest, so pixels stay visible) under a title bar."""
    image = image.convert("RGB").resize((image.width * scale, image.height * scale),
                                        Image.Resampling.NEAREST)
    font = ImageFont.load_default()
    bar = 24
    out = Image.new("RGB", (image.width, image.height + bar), "white")
    out.paste(image, (0, bar))
    ImageDraw.Draw(out).text((6, 5), title, fill="black", font=font)
    return out


def side_by_side(panels: Sequence[Image.Image], gap: int = 12) -> Image.Image:
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    out = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + gap
    return out


def grid_figure(run_dir: Path, epoch: int | None = None) -> Image.Image:
    epoch, path = pick_grid(run_dir, epoch)
    return titled(open_image(path), f"{run_title(run_dir)} - epoch {epoch}")


def compare_figure(run_dirs: Sequence[Path], epoch: int | None = None) -> Image.Image:
    return side_by_side([grid_figure(Path(d), epoch) for d in run_dirs])


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


def forward_figure(overrides: Sequence[str]) -> Image.Image:
    """The forward-process picture of the config given by ``overrides`` (no training)."""
    cfg = cli.compose(overrides)
    data = build(cfg, "data").setup(labeled=False)
    diffusion = build_diffusion(cfg)
    images = torch.as_tensor(data.data.images[:4])  # uint8 (4, 3, H, W)
    picture, ts = forward_process_image(diffusion, images, data.normalize)
    schedule = {k: v for k, v in OmegaConf.to_container(cfg.noise_schedule).items()
                if k != "_target_"}
    return titled(picture, f"forward process {schedule} columns: t = {ts}")


def metric_series(run_dir: Path, key: str) -> dict[int, float]:
    """Step -> value of ``key`` in a run's metrics.jsonl (a value that is not a finite number
    is skipped, with a warning naming the file and step)."""
    values = {}
    for row in read_run_metrics(run_dir):
        if key in row:
            value = number(row[key])
            if value is None:
                log.warning("%s step %d: %s=%r is not a finite number; skipped",
                            RunFolder(run_dir).metrics, row["step"], key, row[key])
            else:
                values[row["step"]] = value
    if not values:
        raise RunFolderError(f"{Path(run_dir) / 'metrics.jsonl'} has no {key!r} values")
    return values


def curves_figure(run_dirs: Sequence[Path], key: str = "train/loss", smooth: float = 0.6,
                  from_step: int = 0) -> Image.Image:
    """``key`` against step, one line per experiment, averaged over its seeds."""
    groups: dict[str, list[dict[int, float]]] = defaultdict(list)
    for d in run_dirs:
        groups[run_title(Path(d))].append(metric_series(Path(d), key))
    series = {}
    for group, runs in groups.items():
        steps = sorted(set.intersection(*(set(r) for r in runs)))
        mean = [statistics.fmean(r[s] for r in runs) for s in steps]
        name = f"{group} (mean of {len(runs)})" if len(runs) > 1 else group
        series[name] = [(s, v) for s, v in zip(steps, ema(mean, smooth), strict=True)
                        if s >= from_step]
    title = f"{key}, smoothed {smooth:g}" if smooth else key
    if not any(series.values()):
        raise RunFolderError(f"no {key!r} values at or after step {from_step} in "
                             f"{', '.join(map(str, run_dirs))}")
    return line_chart(series, title, log_y=key.endswith("loss"))


USAGE = "python -m cartoondiff.figures grid|compare|forward|curves|blog RUN_DIR ... [key=value]"
OPTIONS = {
    "epoch": cli.Option(None, "the epoch whose grid is drawn (0-based, as the blog counts); "
                        "null: the last"),
    "out": cli.Option(None, "the image written (.png); for blog the folder; null: COMMAND.png "
                      "in the current folder (blog: figures/)"),
    "key": cli.Option("train/loss", "the logged metric plotted against step"),
    "smooth": cli.Option(0.6, "exponential smoothing, 0 (none) to <1, as W&B's slider"),
    "from_step": cli.Option(0, "drop the steps before this one"),
}
# Each command: its usage, what it draws, its options (of OPTIONS) and an example.
COMMANDS = {
    "grid": ("python -m cartoondiff.figures grid RUN_DIR [epoch=N] [out=fig.png]",
             "A run's sample grid after one epoch, titled.", ("epoch", "out"),
             "python -m cartoondiff.figures grid outputs/DATE/TIME epoch=9 out=fig13.png"),
    "compare": ("python -m cartoondiff.figures compare RUN_DIR RUN_DIR ... [epoch=N] "
                "[out=fig.png]",
                "Several runs' grids at the same epoch side by side, titled.",
                ("epoch", "out"),
                "python -m cartoondiff.figures compare RUN_A RUN_B epoch=9 out=heads.png"),
    "forward": ("python -m cartoondiff.figures forward [out=fig.png] [hydra overrides ...]",
                "The forward process of a config (Hydra overrides), without training.",
                ("out",),
                "python -m cartoondiff.figures forward noise_schedule.beta_end=0.2 "
                "out=noise.png"),
    "curves": ("python -m cartoondiff.figures curves RUN_DIR ... [key=train/loss] [smooth=0.6] "
               "[from_step=0] [out=fig.png]",
               "A logged metric against step, one line per experiment (seeds averaged).",
               ("key", "smooth", "from_step", "out"),
               "python -m cartoondiff.figures curves RUN_A RUN_B out=loss.png"),
    "blog": ("python -m cartoondiff.figures blog RUN_DIR [out=DIR]",
             "Every blog figure the run's experiment redraws, into a folder.", ("out",),
             "python -m cartoondiff.figures blog outputs/DATE/TIME out=figures"),
}


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def check_options(command: str, opts: dict) -> Path:
    """Every option checked before any run folder is read; returns the output path (a
    folder for ``blog``)."""
    def need(ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise ArgumentError(key, opts[key], expected)

    need(opts["epoch"] is None or (is_int(opts["epoch"]) and opts["epoch"] >= 0), "epoch",
         "an integer >= 0 (0-based, as the blog)")
    need(number(opts["smooth"]) is not None and 0 <= opts["smooth"] < 1, "smooth",
         "a number in [0, 1) (0: no smoothing)")
    need(is_int(opts["from_step"]) and opts["from_step"] >= 0, "from_step", "an integer >= 0")
    need(isinstance(opts["key"], str) and opts["key"] != "", "key",
         "a logged metric's name, e.g. train/loss")
    if command == "blog":
        out = Path(str(opts["out"] or "figures")).expanduser()
        need(not out.exists() or out.is_dir(), "out", "a folder for the figures: it is a file")
        check_output("out", out / "fig.png", given=out)  # the folder can be created and written
        return out
    return check_output("out", str(opts["out"] or f"{command}.png"), IMAGE_SUFFIXES)


def main(argv: Sequence[str]) -> Path:
    if argv and argv[0] in cli.HELP_FLAGS:
        commands = "\n".join(f"  {name:<9}{about}" for name, (_, about, _, _)
                              in COMMANDS.items())
        cli.exit_with_help(cli.help_text(
            USAGE, OPTIONS, f"{__doc__}\ncommands (COMMAND --help lists its options):\n"
            f"{commands}", COMMANDS["grid"][3]))
    if not argv or argv[0] not in COMMANDS:
        raise cli.UsageError(f"the first argument is one of {', '.join(COMMANDS)} "
                             "(python -m cartoondiff.figures --help)")
    command = argv[0]
    usage, about, keys, example = COMMANDS[command]
    args = cli.parse(argv[1:], {k: OPTIONS[k] for k in keys}, usage,
                     overrides=command == "forward", about=about, example=example)
    opts = {**{k: o.default for k, o in OPTIONS.items()}, **args.options}
    runs = [Path(p) for p in args.positional]
    if command in ("compare", "curves"):
        runs = distinct_folders(runs)
    out = check_options(command, opts)
    needed = {"grid": 1, "compare": 2, "curves": 1, "forward": 0, "blog": 1}[command]
    if len(runs) < needed or (command in ("grid", "blog") and len(runs) > 1):
        raise cli.UsageError(f"{command} takes {needed}{'' if command in ('grid', 'blog') else '+'}"
                             f" run folder(s); got {len(runs)} (usage: {usage})")
    if command == "blog":
        written = blog_figures(runs[0], out)
        print("wrote " + ", ".join(map(str, written)))
        return written[0].parent
    if command == "grid":
        figure = grid_figure(runs[0], opts["epoch"])
    elif command == "compare":
        figure = compare_figure(runs, opts["epoch"])
    elif command == "curves":
        figure = curves_figure(runs, str(opts["key"]), float(opts["smooth"]),
                               int(opts["from_step"]))
    else:
        figure = forward_figure(args.overrides + [str(r) for r in runs])
    save_image_atomic(figure, out)
    print(f"wrote {out}")
    return out


def console() -> None:
    """Console script ``cartoondiff-figures``."""
    cli.run(main)


if __name__ == "__main__":
    console()
