"""Blog-style figures from run directories and evaluations, one command each (listed below,
with their usage).

``grid`` takes a run's sample grid after epoch N (0-based, as the blog counts: "epoch 0" is
the grid after the first pass over the data; default: the last epoch), adds a title and
writes it. ``compare`` puts several runs' grids at the same epoch side by side, titled with
each run's name. ``forward`` draws the forward-process picture for a config without training
(the blog's advice: look at the noise level first): the data set's first four avatars, each
column labelled with its t, titled with the schedule in words. ``compare``, ``curves`` and
``loss_quality`` take run folders as a shell glob lists a sweep (``multirun/DATE/TIME/*``):
what is plainly not a run (``multirun.yaml``, a log) is passed over, named in one line.
``blog`` writes every blog figure the run's experiment redraws (its ``figures`` config:
``DIR/fig5.png`` is the grid of epoch 39 for ``fig03_05_vanilla_pm1``); a run that stopped
earlier (``scale=cpu``) shows its nearest earlier epoch, and the title says so. These
pictures are sample grids (Pillow).

The charts are drawn with matplotlib (``figures.charts``), as PNG, SVG or PDF by the
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

from collections.abc import Sequence
from pathlib import Path

from cartoondiff.figures import charts
from cartoondiff.figures.charts import (
    attributes_figure,
    curves_figure,
    loss_quality_figure,
    settings_figure,
)
from cartoondiff.figures.pictures import (
    blog_figures,
    compare_figure,
    epoch_grids,
    forward_figure,
    grid_figure,
)
from cartoondiff.runs import cli
from cartoondiff.runs.errors import is_int, require
from cartoondiff.runs.files import IMAGE_SUFFIXES, check_output, save_image_atomic
from cartoondiff.runs.records import number, run_folders

# torch (2 s to import) is imported by the two commands that need it, forward and attributes:
# the others read PNGs and JSON, and a chart should not wait for a tensor library.
__all__ = ["attributes_figure", "blog_figures", "compare_figure", "console", "curves_figure",
           "epoch_grids", "forward_figure", "grid_figure", "loss_quality_figure", "main",
           "settings_figure"]

CHARTS = ("curves", "loss_quality", "attributes", "settings")  # matplotlib: png, svg or pdf
PROG = "python -m cartoondiff.figures"
USAGE = (f"{PROG} grid|compare|forward|curves|loss_quality|attributes|settings|blog "
         "RUN_DIR|EVAL.json ... [key=value]")
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
# Each command: its arguments, what it draws, its options (of OPTIONS) and an example's
# arguments (both after "python -m cartoondiff.figures COMMAND").
COMMANDS = {
    "grid": ("RUN_DIR [epoch=N] [out=fig.png]", "A run's sample grid after one epoch, titled.",
             ("epoch", "out"), "outputs/DATE/TIME epoch=9 out=fig13.png"),
    "compare": ("RUN_DIR RUN_DIR ... [epoch=N] [out=fig.png]",
                "Several runs' grids at the same epoch side by side, titled.", ("epoch", "out"),
                "RUN_A RUN_B epoch=9 out=heads.png"),
    "forward": ("[out=fig.png] [hydra overrides ...]",
                "The forward process of a config (Hydra overrides), without training.", ("out",),
                "noise_schedule.beta_end=0.2 out=noise.png"),
    "curves": ("RUN_DIR ... [key=train/loss] [smooth=0.6] [from_step=0] [x=epoch] "
               "[out=fig.png|fig.svg]",
               "A logged metric against epoch, one line per experiment (mean and sd over seeds).",
               ("key", "smooth", "from_step", "x", "out"), "multirun/DATE/TIME/* out=loss.svg"),
    "loss_quality": ("RUN_DIR ... [key=eval/faithfulness_mean] [out=fig.png]",
                     "Blog figures 17-18: each evaluated epoch at (its mean loss, the metric).",
                     ("key", "out"), "RUN_A RUN_B key=eval/hair_color out=loss_quality.png"),
    "attributes": ("EVAL.json [setting=all] [out=fig.png]",
                   "An evaluation's faithfulness per attribute beside chance and the ceiling.",
                   ("setting", "out"), "RUN_A/eval.json out=attributes.png"),
    "settings": ("EVAL.json [key=faithfulness_mean] [x=auto] [out=fig.png]",
                 "An evaluation's metric against guidance or steps.", ("key", "x", "out"),
                 "RUN_A/eval.json out=guidance.png"),
    "blog": ("RUN_DIR [out=DIR]", "Every blog figure the run's experiment redraws, into a folder.",
             ("out",), "outputs/DATE/TIME out=figures"),
}
NEEDED = {"grid": 1, "compare": 2, "curves": 1, "loss_quality": 1, "forward": 0, "blog": 1,
          "attributes": 1, "settings": 1}
ONE_INPUT = ("grid", "blog", "attributes", "settings")
EVALUATIONS = ("attributes", "settings")  # read an evaluation JSON, not run folders
DRAW = {"grid": grid_figure, "compare": compare_figure, "curves": curves_figure,
        "loss_quality": loss_quality_figure, "attributes": attributes_figure,
        "settings": settings_figure}


def check_options(command: str, opts: dict, inputs: Sequence[Path] = ()) -> Path:
    """Every option checked before any run folder is read; returns the output path (a
    folder for ``blog``), which is none of the ``inputs`` (run folders and evaluation JSONs)
    nor part of a run's record."""
    epoch, smooth, from_step, key = opts["epoch"], opts["smooth"], opts["from_step"], opts["key"]
    require(epoch is None or (is_int(epoch) and epoch >= 0), "epoch", epoch,
            "an integer >= 0 (0-based, as the blog)")
    require(number(smooth) is not None and 0 <= smooth < 1, "smooth", smooth,
            "a number in [0, 1) (0: no smoothing)")
    require(is_int(from_step) and from_step >= 0, "from_step", from_step, "an integer >= 0")
    require(key is None or (isinstance(key, str) and key != ""), "key", key,
            "a logged metric's name, e.g. train/loss")
    if command == "blog":
        out = Path(str(opts["out"] or "figures")).expanduser()
        require(not out.exists() or out.is_dir(), "out", opts["out"],
                "a folder for the figures: it is a file")
        # the folder can be created and written, and is not part of the run's record
        check_output("out", out / "fig.png", given=out, inputs=inputs)
        return out
    suffixes = charts.FORMATS if command in CHARTS else IMAGE_SUFFIXES
    return check_output("out", str(opts["out"] or f"{command}.png"), suffixes, inputs=inputs)


def main(argv: Sequence[str]) -> Path:
    if argv and argv[0] in cli.HELP_FLAGS:
        commands = "\n".join(f"  {name} {arguments}\n      {about}"
                             for name, (arguments, about, _, _) in COMMANDS.items())
        cli.exit_with_help(cli.help_text(
            USAGE, OPTIONS, f"{__doc__}\ncommands (COMMAND --help lists its options):\n"
            f"{commands}", f"{PROG} grid {COMMANDS['grid'][3]}"))
    if not argv or argv[0] not in COMMANDS:
        raise cli.UsageError(f"the first argument is one of {', '.join(COMMANDS)} ({PROG} --help)")
    command = argv[0]
    arguments, about, keys, example = COMMANDS[command]
    usage = f"{PROG} {command} {arguments}"
    args = cli.parse(argv[1:], {k: OPTIONS[k] for k in keys}, usage, command == "forward",
                     about=about, example=f"{PROG} {command} {example}")
    opts = {**{k: o.default for k, o in OPTIONS.items()}, **args.options}
    runs = [Path(p) for p in args.positional]
    if command in ("compare", "curves", "loss_quality"):
        runs = run_folders(runs)
    # what out= must not be: the inputs, and the run an evaluation JSON sits in (RUN/eval.json)
    inputs = [] if command == "forward" else [*runs, *(r.parent for r in runs
                                                       if command in EVALUATIONS)]
    out = check_options(command, opts, inputs)
    needed = NEEDED[command]
    if len(runs) < needed or (command in ONE_INPUT and len(runs) > 1):
        what = "evaluation JSON" if command in EVALUATIONS else "run folder(s)"
        raise cli.UsageError(f"{command} takes {needed}{'' if command in ONE_INPUT else '+'}"
                             f" {what}; got {len(runs)} (usage: {usage})")
    if command == "blog":
        written = blog_figures(runs[0], out)
        print("wrote " + ", ".join(map(str, written)))
        return written[0].parent
    if command == "forward":
        figure = forward_figure(args.overrides + [str(r) for r in runs])
    else:  # the options given; those left null are the drawing function's defaults
        given = {k: v for k, v in args.options.items() if k != "out" and v is not None}
        figure = DRAW[command](runs[0] if command in ONE_INPUT else runs, **given)
    if isinstance(figure, charts.Figure):
        charts.save(figure, out)
    else:
        save_image_atomic(figure, out)
    print(f"wrote {out}")
    return out


def console() -> None:
    """Console script ``cartoondiff-figures``."""
    cli.execute(main)
