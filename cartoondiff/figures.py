"""Blog-style figures from run directories, one command each.

    python -m cartoondiff.figures grid RUN_DIR [epoch=N] [out=fig.png]
    python -m cartoondiff.figures compare RUN_DIR RUN_DIR ... [epoch=N] [out=fig.png]
    python -m cartoondiff.figures forward [out=fig.png] [hydra overrides ...]
    python -m cartoondiff.figures curves RUN_DIR ... [key=train/loss] [smooth=0.6] [from_step=0]
        [out=fig.png]

``grid`` takes a run's sample grid after epoch N (0-based, as the blog counts: "epoch 0" is
the grid after the first pass over the data; default: the last epoch), adds a title and
writes it. ``compare`` puts several runs' grids at the same epoch side by side, titled with
each run's name. ``forward`` draws the forward-process picture for a config without training
(the blog's advice: look at the noise level first). ``curves`` plots one logged metric
against step, one line per experiment (runs of the same W&B group, i.e. seeds, are
averaged), smoothed like W&B's slider; losses get a log axis. ``from_step`` drops the
first steps, whose large early losses otherwise flatten the differences that matter.
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
from cartoondiff.tracking import RunFolderError, read_run_metrics

GRID_NAME = re.compile(r"epoch(\d+)\.png$")


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
    """The run's W&B-style name: its experiment group, else its overrides, else the folder."""
    cfg_path = Path(run_dir) / "config.yaml"
    if cfg_path.exists():
        cfg = OmegaConf.load(cfg_path)
        group = OmegaConf.select(cfg, "logger.group")
        name = OmegaConf.select(cfg, "logger.name")
        if group or name:
            return str(group or name)
    overrides = Path(run_dir) / ".hydra" / "overrides.yaml"
    if overrides.exists():
        return ",".join(OmegaConf.load(overrides)) or Path(run_dir).name
    return Path(run_dir).name


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
    return line_chart(series, title, log_y=key.endswith("loss"))


USAGE = "python -m cartoondiff.figures grid|compare|forward|curves ... (see --help)"
OPTIONS = {"epoch": None, "out": None, "key": "train/loss", "smooth": 0.6, "from_step": 0}


def main(argv: Sequence[str]) -> Path:
    if not argv or argv[0] not in ("grid", "compare", "forward", "curves"):
        raise cli.UsageError(f"the first argument is grid, compare, forward or curves\n{__doc__}")
    command = argv[0]
    args = cli.parse(argv[1:], OPTIONS, USAGE, overrides=command == "forward")
    opts, runs = args.options, [Path(p) for p in args.positional]
    if opts["epoch"] is not None and not (isinstance(opts["epoch"], int) and opts["epoch"] >= 0):
        raise ArgumentError("epoch", opts["epoch"], "an integer >= 0 (0-based, as the blog)")
    out = Path(str(opts["out"] or f"{command}.png"))
    needed = {"grid": 1, "compare": 2, "curves": 1, "forward": 0}[command]
    if len(runs) < needed or (command == "grid" and len(runs) > 1):
        raise cli.UsageError(f"{command} takes {'one' if command == 'grid' else 'run folders'}"
                             f" RUN_DIR{'' if command == 'grid' else ' ...'}; got {len(runs)}")
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
