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

import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf
from PIL import Image, ImageDraw, ImageFont

from cartoondiff import cli
from cartoondiff.config import build
from cartoondiff.errors import ArgumentError
from cartoondiff.inference.grids import forward_process_image
from cartoondiff.plots import ema, line_chart
from cartoondiff.run_naming import strip_stamp
from cartoondiff.tracking import RunFolderError, read_run_metrics

GRID_NAME = re.compile(r"epoch(\d+)\.png$")
SWEEP_GROUP_PREFIX = "sweep-"  # run_naming's group of a plain sweep
_NAME_PARTS = re.compile(r",(?=[\w.+~/-]+=)")  # "a=1,b=[1,2]" -> "a=1", "b=[1,2]"


def epoch_grids(run_dir: Path) -> dict[int, Path]:
    """Epoch -> sample grid PNG of a run directory."""
    found = {int(m.group(1)): p for p in (Path(run_dir) / "samples").glob("epoch*.png")
             if (m := GRID_NAME.search(p.name))}
    if not found:
        raise RunFolderError(f"{run_dir}: no samples/epochNNN.png grids (is this a run folder?)")
    return dict(sorted(found.items()))


def pick_grid(run_dir: Path, epoch: int | None) -> tuple[int, Path]:
    grids = epoch_grids(run_dir)
    if epoch is None:
        epoch = max(grids)
    if epoch not in grids:
        raise RunFolderError(f"{run_dir} has no grid for epoch {epoch}; it has {list(grids)}")
    return epoch, grids[epoch]


def run_title(run_dir: Path) -> str:
    """Which experiment a run folder is, as W&B groups it: runs with the same title are seeds
    of one experiment (the report and the curves average them).

    An experiment's runs: its group (``fig12_tau2x-cpu``). A sweep's runs: their swept keys
    without the seed (``attention=mha4,tau.projections=2x``). Else the run's name, or the folder.
    """
    cfg_path = Path(run_dir) / "config.yaml"
    cfg = OmegaConf.load(cfg_path) if cfg_path.is_file() else OmegaConf.create()
    group = OmegaConf.select(cfg, "logger.group")
    name = OmegaConf.select(cfg, "logger.name")
    if group and not str(group).startswith(SWEEP_GROUP_PREFIX):
        return str(group)
    if name:  # a plain run's time stamp names the run, not the experiment: left out
        base = strip_stamp(str(name))
        return ",".join(p for p in _NAME_PARTS.split(base)
                        if not p.startswith("seed=")) or str(group or base or Path(run_dir).name)
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
    return titled(Image.open(path), f"{run_title(run_dir)} - epoch {epoch}")


def compare_figure(run_dirs: Sequence[Path], epoch: int | None = None) -> Image.Image:
    return side_by_side([grid_figure(Path(d), epoch) for d in run_dirs])


def blog_figures(run_dir: Path, out_dir: Path) -> list[Path]:
    """Each figure of the run's experiment (config ``figures``: name -> epoch) as a titled
    grid ``out_dir/NAME.png``; the nearest earlier epoch when the run has not reached it."""
    cfg_path = Path(run_dir) / "config.yaml"
    wanted = OmegaConf.select(OmegaConf.load(cfg_path), "figures") if cfg_path.is_file() else None
    if not wanted:
        raise RunFolderError(f"{run_dir}: its config names no blog figures (run an experiment: "
                             "python run.py experiment=NAME ...)")
    grids = epoch_grids(run_dir)
    written = []
    for name, epoch in wanted.items():
        have = max((e for e in grids if e <= epoch), default=min(grids))
        note = "" if have == epoch else f" (the blog's epoch {epoch} is not in this run)"
        title = f"{name}: {run_title(run_dir)} - epoch {have}{note}"
        path = Path(out_dir) / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        titled(Image.open(grids[have]), title).save(path)
        written.append(path)
    return written


def forward_figure(overrides: Sequence[str]) -> Image.Image:
    """The forward-process picture of the config given by ``overrides`` (no training)."""
    cfg = cli.compose(overrides)
    data = build(cfg, "data").setup(labeled=False)
    diffusion = build(cfg, "diffusion")
    images = torch.as_tensor(data.data.images[:4])  # uint8 (4, 3, H, W)
    picture, ts = forward_process_image(diffusion, images, data.normalize)
    schedule = {k: v for k, v in OmegaConf.to_container(cfg.noise_schedule).items()
                if k != "_target_"}
    return titled(picture, f"forward process {schedule} columns: t = {ts}")


def metric_series(run_dir: Path, key: str) -> dict[int, float]:
    """Step -> value of ``key`` in a run's metrics.jsonl."""
    values = {int(r["step"]): float(r[key]) for r in read_run_metrics(run_dir) if key in r}
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


COMMANDS = ("grid", "compare", "forward", "curves", "blog")
USAGE = "python -m cartoondiff.figures grid|compare|forward|curves|blog RUN_DIR ... [key=value]"
OPTIONS = {"epoch": None, "out": None, "key": "train/loss", "smooth": 0.6, "from_step": 0}


def main(argv: Sequence[str]) -> Path:
    if not argv or argv[0] not in COMMANDS:
        raise cli.UsageError(f"the first argument is one of {', '.join(COMMANDS)} "
                             "(python -m cartoondiff.figures; see its docstring)")
    command = argv[0]
    args = cli.parse(argv[1:], OPTIONS, USAGE, overrides=command == "forward")
    opts, runs = args.options, [Path(p) for p in args.positional]
    if opts["epoch"] is not None and not (isinstance(opts["epoch"], int) and opts["epoch"] >= 0):
        raise ArgumentError("epoch", opts["epoch"], "an integer >= 0 (0-based, as the blog)")
    out = Path(str(opts["out"] or f"{command}.png"))
    needed = {"grid": 1, "compare": 2, "curves": 1, "forward": 0, "blog": 1}[command]
    if len(runs) < needed or (command in ("grid", "blog") and len(runs) > 1):
        raise cli.UsageError(f"{command} takes {needed}{'' if command in ('grid', 'blog') else '+'}"
                             f" run folder(s); got {len(runs)} (usage: {USAGE})")
    if command == "blog":
        written = blog_figures(runs[0], Path(str(opts["out"] or "figures")))
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
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(out)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    cli.run(main)
