"""Blog-style figures from run directories and evaluations, one command each.

    python -m cartoondiff.figures grid RUN_DIR [epoch=N] [out=fig.png]
    python -m cartoondiff.figures compare RUN_DIR RUN_DIR ... [epoch=N] [out=fig.png]
    python -m cartoondiff.figures forward [out=fig.png] [hydra overrides ...]
    python -m cartoondiff.figures curves RUN_DIR ... [key=train/loss] [smooth=0.6] [from_step=0]
        [x=epoch] [out=fig.png|fig.svg]
    python -m cartoondiff.figures loss_quality RUN_DIR ... [key=eval/faithfulness_mean]
        [out=fig.png]
    python -m cartoondiff.figures attributes EVAL.json [setting=all] [out=fig.png]
    python -m cartoondiff.figures settings EVAL.json [key=faithfulness_mean] [x=auto]
        [out=fig.png]
    python -m cartoondiff.figures blog RUN_DIR [out=DIR]

``grid`` takes a run's sample grid after epoch N (0-based, as the blog counts: "epoch 0" is
the grid after the first pass over the data; default: the last epoch), adds a title and
writes it. ``compare`` puts several runs' grids at the same epoch side by side, titled with
each run's name. ``forward`` draws the forward-process picture for a config without training
(the blog's advice: look at the noise level first). ``blog`` writes every blog figure the
run's experiment redraws (its ``figures`` config: ``DIR/fig5.png`` is the grid of epoch 39
for ``fig03_05_vanilla_pm1``); a run that stopped earlier (``scale=cpu``) shows its nearest
earlier epoch, and the title says so. These pictures are sample grids (Pillow).

The charts are drawn with matplotlib (``cartoondiff.plots``), as PNG, SVG or PDF by the
``out`` extension. ``curves`` plots one logged metric against epochs completed (``x=step``:
optimizer steps), one line per experiment: runs of the same W&B group (seeds) are averaged,
with a band of ±1 sd; smoothed like W&B's slider; losses get a log axis. ``from_step``
drops the first steps, whose large early losses otherwise flatten the differences that
matter. ``loss_quality`` is the blog's figures 17-18: each evaluated epoch as a point of
(the epoch's mean training loss, ``key``), joined in epoch order, one line per experiment.
``attributes`` draws an evaluation's per-attribute faithfulness as bars beside chance and
the judge's ceiling; ``settings`` its faithfulness (or ``key``) against guidance or steps,
one line per other setting (``python -m cartoondiff.evaluate ... out=EVAL.json`` writes it).
"""

from __future__ import annotations

import json
import logging
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from omegaconf import OmegaConf
from PIL import Image, ImageDraw, ImageFont

from cartoondiff import cli, plots
from cartoondiff.errors import ArgumentError, is_int
from cartoondiff.files import check_output, save_image_atomic
from cartoondiff.plots import ema
from cartoondiff.run_folder import RunFolder
from cartoondiff.run_naming import strip_stamp
from cartoondiff.run_records import (
    RunFolderError,
    distinct_folders,
    number,
    open_image,
    read_run_config,
    read_run_metrics,
)

log = logging.getLogger(__name__)
# torch (2 s to import) is imported by the two commands that need it, forward and attributes:
# the others read PNGs and JSON, and a chart should not wait for a tensor library.

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
    import torch

    from cartoondiff.config import build, build_diffusion
    from cartoondiff.inference.grids import forward_process_image

    cfg = cli.compose(overrides)
    data = build(cfg, "data").setup(labeled=False)
    diffusion = build_diffusion(cfg)
    images = torch.as_tensor(data.data.images[:4])  # uint8 (4, 3, H, W)
    picture, ts = forward_process_image(diffusion, images, data.normalize)
    schedule = {k: v for k, v in OmegaConf.to_container(cfg.noise_schedule).items()
                if k != "_target_"}
    return titled(picture, f"forward process {schedule} columns: t = {ts}")


def metric_points(run_dir: Path, key: str, x: str = "epoch",
                  from_step: int = 0) -> list[tuple[float, float]]:
    """(x, value) of ``key`` in a run's metrics.jsonl, from ``from_step`` on. ``x="epoch"``:
    epochs completed (an evaluation's ``epoch``, a training row's ``train/epoch``);
    ``x="step"``: the optimizer step."""
    rows = read_run_metrics(run_dir)
    per_epoch = next((r["step"] / r["train/epoch"] for r in rows if r.get("train/epoch")), None)
    points = []
    for row in rows:
        if key not in row or row["step"] < from_step:
            continue
        if x == "step":
            at = row["step"]
        elif "epoch" in row and key.startswith("eval/"):
            at = row["epoch"]
        elif "train/epoch" in row:
            at = row["train/epoch"]
        elif per_epoch:
            at = row["step"] / per_epoch
        else:
            raise RunFolderError(f"{run_dir}: cannot tell the epoch of step {row['step']}; "
                                 "use x=step")
        value = number(row[key])
        if value is None:  # a damaged or non-finite value: named, then skipped
            log.warning("%s step %s: %s=%r is not a finite number; skipped",
                        RunFolder(run_dir).metrics, row["step"], key, row[key])
            continue
        points.append((float(at), value))
    if not points:
        raise RunFolderError(f"{RunFolder(run_dir).metrics} has no {key!r} values"
                             + (f" at or after step {from_step}" if from_step else ""))
    return points


def by_experiment(run_dirs: Sequence[Path]) -> dict[str, list[Path]]:
    """Run folders grouped as W&B groups them (``run_title``): seeds of one experiment."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for d in run_dirs:
        groups[run_title(Path(d))].append(Path(d))
    return dict(groups)


def curves_figure(run_dirs: Sequence[Path], key: str = "train/loss", smooth: float = 0.6,
                  from_step: int = 0, x: str = "epoch") -> Figure:
    """``key`` against epoch (or step), one line per experiment, mean and sd over its seeds."""
    if x not in ("epoch", "step"):
        raise ArgumentError("x", x, "epoch or step")
    series = {}
    for group, runs in by_experiment(run_dirs).items():
        series[group] = []
        for run in runs:
            points = metric_points(run, key, x, from_step)
            smoothed = ema([v for _, v in points], smooth)
            series[group].append(list(zip([p for p, _ in points], smoothed, strict=True)))
    title = f"{key}, smoothed {smooth:g}" if smooth else key
    return plots.line_chart(series, title, x_label="epochs completed" if x == "epoch" else x,
                            y_label=key, log_y=key.endswith("loss"))


def loss_quality_figure(run_dirs: Sequence[Path], key: str = "eval/faithfulness_mean"
                        ) -> Figure:
    """The blog's figures 17-18: ``key`` at each evaluated epoch against that epoch's mean
    training loss, one line per experiment (mean ± sd over its seeds)."""
    series = {}
    for group, runs in by_experiment(run_dirs).items():
        per_run = []
        for run in runs:
            losses = metric_points(run, "train/loss")
            evals = dict(metric_points(run, key))
            rows = {}
            for epoch, value in evals.items():
                window = [v for at, v in losses if epoch - 1 < at <= epoch + 1e-9]
                if window:
                    rows[int(round(epoch))] = (statistics.fmean(window), value)
            per_run.append(rows)
        epochs = sorted(set.intersection(*(set(r) for r in per_run)))
        series[group] = [(e, *_mean_sd([r[e][0] for r in per_run]),
                          *_mean_sd([r[e][1] for r in per_run])) for e in epochs]
    if not any(series.values()):
        raise RunFolderError(f"no epoch of {', '.join(map(str, run_dirs))} has both "
                             f"train/loss and {key!r} (evaluate.every_epochs=1 logs it)")
    return plots.loss_quality_chart(series, key)


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def read_evaluation(path: Path) -> dict:
    """An evaluation JSON (``python -m cartoondiff.evaluate ... out=PATH``)."""
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
        result["runs"][0]["metrics"]  # noqa: B018  (the shape every figure reads)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise RunFolderError(f"{path}: not an evaluation JSON ({err!r})") from None
    return result


def setting_label(run: dict) -> str:
    return f"{run['sampler']} {run['steps']} steps, w={run['guidance']:g}"


def attributes_figure(path: Path, setting: str = "all") -> Figure:
    """An evaluation's per-attribute faithfulness as bars beside chance and the ceiling."""
    from cartoondiff import attributes

    result = read_evaluation(path)
    runs = result["runs"]
    if setting != "all":
        if not (cli_int(setting) is not None and 0 <= int(setting) < len(runs)):
            raise ArgumentError("setting", setting, f"all or an index in [0, {len(runs)})")
        runs = [runs[int(setting)]]
    if len(runs) > len(plots.PALETTE):
        raise ArgumentError("setting", setting, f"an index: {path} holds {len(runs)} settings")
    names = list(attributes.NAMES)
    bars = {setting_label(r): [r["metrics"].get(n) for n in names] for r in runs}
    return plots.attribute_bars(
        names, bars, [result["chance"][n] for n in names],
        [result["classifier"]["accuracy"][n] for n in names],
        f"faithfulness per attribute ({result['n']} samples)")


def settings_figure(path: Path, key: str = "faithfulness_mean", x: str = "auto") -> Figure:
    """An evaluation's ``key`` against guidance or steps (``x``; auto: whichever varies
    more), one line per value of the other settings."""
    runs = read_evaluation(path)["runs"]
    if x == "auto":
        x = max(("guidance", "steps"), key=lambda k: len({r[k] for r in runs}))
    if x not in ("guidance", "steps"):
        raise ArgumentError("x", x, "auto, guidance or steps")
    key = key.removeprefix("eval/")
    if key not in runs[0]["metrics"]:
        raise ArgumentError("key", key, f"one of {', '.join(runs[0]['metrics'])}")
    other = "steps" if x == "guidance" else "guidance"
    series: dict[str, list[list[tuple[float, float]]]] = {}
    for r in runs:
        if r["metrics"].get(key) is None:
            continue
        name = f"{r['sampler']}, {other} {r[other]:g}"
        series.setdefault(name, [[]])[0].append((float(r[x]), float(r["metrics"][key])))
    return plots.line_chart({k: [sorted(v[0])] for k, v in series.items()},
                            f"{key} against {x}", x_label=x, y_label=key)


def cli_int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


CHARTS = ("curves", "loss_quality", "attributes", "settings")  # matplotlib: png, svg or pdf
USAGE = ("python -m cartoondiff.figures grid|compare|forward|curves|loss_quality|attributes|"
         "settings|blog RUN_DIR|EVAL.json ... [key=value]")
OPTIONS = {
    "epoch": cli.Option(None, "the epoch whose grid is drawn (0-based, as the blog counts); "
                        "null: the last"),
    "out": cli.Option(None, "the file written (grids .png; charts .png, .svg or .pdf); for blog "
                      "the folder; null: COMMAND.png in the current folder (blog: figures/)"),
    "key": cli.Option(None, "the metric drawn; null: train/loss (curves), "
                      "eval/faithfulness_mean (loss_quality), faithfulness_mean (settings)"),
    "smooth": cli.Option(0.6, "exponential smoothing, 0 (none) to <1, as W&B's slider"),
    "from_step": cli.Option(0, "drop the steps before this one"),
    "x": cli.Option(None, "curves: epoch (default) or step; settings: guidance, steps or auto "
                    "(default: whichever varies more)"),
    "setting": cli.Option("all", "all, or the index of one setting in the evaluation JSON"),
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
               "[from_step=0] [x=epoch] [out=fig.png|fig.svg]",
               "A logged metric against epoch, one line per experiment (mean and sd over seeds).",
               ("key", "smooth", "from_step", "x", "out"),
               "python -m cartoondiff.figures curves RUN_A RUN_B out=loss.svg"),
    "loss_quality": ("python -m cartoondiff.figures loss_quality RUN_DIR ... "
                     "[key=eval/faithfulness_mean] [out=fig.png]",
                     "Blog figures 17-18: each evaluated epoch at (its mean loss, the metric).",
                     ("key", "out"),
                     "python -m cartoondiff.figures loss_quality RUN_A RUN_B "
                     "key=eval/hair_color out=loss_quality.png"),
    "attributes": ("python -m cartoondiff.figures attributes EVAL.json [setting=all] "
                   "[out=fig.png]",
                   "An evaluation's faithfulness per attribute beside chance and the ceiling.",
                   ("setting", "out"),
                   "python -m cartoondiff.figures attributes RUN_A/eval.json out=attributes.png"),
    "settings": ("python -m cartoondiff.figures settings EVAL.json [key=faithfulness_mean] "
                 "[x=auto] [out=fig.png]",
                 "An evaluation's metric against guidance or steps.", ("key", "x", "out"),
                 "python -m cartoondiff.figures settings RUN_A/eval.json out=guidance.png"),
    "blog": ("python -m cartoondiff.figures blog RUN_DIR [out=DIR]",
             "Every blog figure the run's experiment redraws, into a folder.", ("out",),
             "python -m cartoondiff.figures blog outputs/DATE/TIME out=figures"),
}
NEEDED = {"grid": 1, "compare": 2, "curves": 1, "loss_quality": 1, "forward": 0, "blog": 1,
          "attributes": 1, "settings": 1}
ONE_INPUT = ("grid", "blog", "attributes", "settings")


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
    need(opts["key"] is None or (isinstance(opts["key"], str) and opts["key"] != ""), "key",
         "a logged metric's name, e.g. train/loss")
    if command == "blog":
        out = Path(str(opts["out"] or "figures")).expanduser()
        need(not out.exists() or out.is_dir(), "out", "a folder for the figures: it is a file")
        check_output("out", out / "fig.png", given=out)  # the folder can be created and written
        return out
    suffixes = plots.FORMATS if command in CHARTS else IMAGE_SUFFIXES
    return check_output("out", str(opts["out"] or f"{command}.png"), suffixes)


def main(argv: Sequence[str]) -> Path:
    if argv and argv[0] in cli.HELP_FLAGS:
        commands = "\n".join(f"  {name:<13}{about}" for name, (_, about, _, _)
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
    if command in ("compare", "curves", "loss_quality"):
        runs = distinct_folders(runs)
    out = check_options(command, opts)
    needed = NEEDED[command]
    if len(runs) < needed or (command in ONE_INPUT and len(runs) > 1):
        what = "evaluation JSON" if command in ("attributes", "settings") else "run folder(s)"
        raise cli.UsageError(f"{command} takes {needed}{'' if command in ONE_INPUT else '+'}"
                             f" {what}; got {len(runs)} (usage: {usage})")
    if command == "blog":
        written = blog_figures(runs[0], out)
        print("wrote " + ", ".join(map(str, written)))
        return written[0].parent
    key = opts["key"]
    if command == "grid":
        figure = grid_figure(runs[0], opts["epoch"])
    elif command == "compare":
        figure = compare_figure(runs, opts["epoch"])
    elif command == "curves":
        figure = curves_figure(runs, str(key or "train/loss"), float(opts["smooth"]),
                               int(opts["from_step"]), str(opts["x"] or "epoch"))
    elif command == "loss_quality":
        figure = loss_quality_figure(runs, str(key or "eval/faithfulness_mean"))
    elif command == "attributes":
        figure = attributes_figure(runs[0], str(opts["setting"]))
    elif command == "settings":
        figure = settings_figure(runs[0], str(key or "faithfulness_mean"),
                                 str(opts["x"] or "auto"))
    else:
        figure = forward_figure(args.overrides + [str(r) for r in runs])
    if isinstance(figure, Figure):
        plots.save(figure, out)
    else:
        save_image_atomic(figure, out)
    print(f"wrote {out}")
    return out


def console() -> None:
    """Console script ``cartoondiff-figures``."""
    cli.run(main)


if __name__ == "__main__":
    console()
