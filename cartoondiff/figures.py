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
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf
from PIL import Image, ImageDraw, ImageFont

from cartoondiff.plots import ema, line_chart
from cartoondiff.tracking import read_metrics

GRID_NAME = re.compile(r"epoch(\d+)\.png$")


def epoch_grids(run_dir: Path) -> dict[int, Path]:
    """Epoch -> sample grid PNG of a run directory."""
    found = {int(m.group(1)): p for p in (Path(run_dir) / "samples").glob("epoch*.png")
             if (m := GRID_NAME.search(p.name))}
    if not found:
        raise FileNotFoundError(f"no samples/epochNNN.png grids in {run_dir}")
    return dict(sorted(found.items()))


def pick_grid(run_dir: Path, epoch: int | None) -> tuple[int, Path]:
    grids = epoch_grids(run_dir)
    if epoch is None:
        epoch = max(grids)
    if epoch not in grids:
        raise FileNotFoundError(f"{run_dir} has no grid for epoch {epoch}; it has {list(grids)}")
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
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from cartoondiff.diffusion import Diffusion
    from cartoondiff.train.grids import SampleGridMaker

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    data = instantiate(cfg.data).setup()
    diffusion = Diffusion(instantiate(cfg.noise_schedule))
    with tempfile.TemporaryDirectory() as tmp:
        maker = SampleGridMaker(diffusion, instantiate(cfg.sampler), data, Path(tmp),
                                torch.device("cpu"))
        path = maker.forward_process()
        columns = path.with_suffix(".txt").read_text().strip()
        image = Image.open(path).copy()
    schedule = OmegaConf.to_container(cfg.noise_schedule)
    return titled(image, f"forward process {schedule} {columns}")


def run_metrics(run_dir: Path) -> list[dict]:
    """The rows of a run directory's metrics.jsonl; the error names the directory."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (is this a run directory?)")
    return read_metrics(path)


def metric_series(run_dir: Path, key: str) -> dict[int, float]:
    """Step -> value of ``key`` in a run's metrics.jsonl."""
    values = {int(r["step"]): float(r[key]) for r in run_metrics(run_dir) if key in r}
    if not values:
        raise ValueError(f"{Path(run_dir) / 'metrics.jsonl'} has no {key!r} values")
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


OPTIONS = ("epoch", "out", "key", "smooth", "from_step")


def main(argv: Sequence[str]) -> Path:
    if not argv or argv[0] not in ("grid", "compare", "forward", "curves"):
        raise SystemExit(__doc__)
    command, rest = argv[0], list(argv[1:])
    opts = {k: v for k, _, v in (a.partition("=") for a in rest if a.split("=")[0] in OPTIONS)}
    positional = [a for a in rest if "=" not in a]
    epoch = int(opts["epoch"]) if "epoch" in opts else None
    out = Path(opts.get("out", f"{command}.png"))
    if command == "grid":
        if len(positional) != 1:
            raise SystemExit("usage: python -m cartoondiff.figures grid RUN_DIR [epoch=N]")
        figure = grid_figure(Path(positional[0]), epoch)
    elif command == "compare":
        if len(positional) < 2:
            raise SystemExit("usage: python -m cartoondiff.figures compare RUN_DIR RUN_DIR ...")
        figure = compare_figure([Path(p) for p in positional], epoch)
    elif command == "curves":
        if not positional:
            raise SystemExit("usage: python -m cartoondiff.figures curves RUN_DIR ... [key=K]")
        figure = curves_figure([Path(p) for p in positional], opts.get("key", "train/loss"),
                               float(opts.get("smooth", 0.6)), int(opts.get("from_step", 0)))
    else:
        overrides = [a for a in rest if a.split("=")[0] not in OPTIONS]
        figure = forward_figure(overrides)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(out)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
