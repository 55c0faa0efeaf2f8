"""Evaluate a trained checkpoint: faithfulness per attribute, Fréchet distance, diversity.

    python -m cartoondiff.evaluate checkpoint=RUN/model_ema.pt n=256 guidance=0,1,2,3,5 \\
        sampler=ddim steps=20,50 seed=0

``guidance``, ``sampler`` and ``steps`` take one value or a comma-separated list; every
combination is evaluated on the same conditions and seeds (ddpm always runs all T steps,
so it appears once per guidance). The attribute classifier is trained on the checkpoint's
own data (same source, size and crop) on first use and cached under
``<cache_dir>/classifiers``. Prints a table and writes JSON beside the checkpoint
(``RUN/eval.json``; a second evaluation is refused there unless ``out=`` names another file).
See docs/evaluation.md for what each number means.

It also logs a W&B run of its own beside ``out`` (``<out folder>/wandb``): the training run's
project and group, ``job_type=eval``, the checkpoint and the settings as config, a table with
one row per setting, line plots of faithfulness against guidance and steps, and the
per-attribute accuracies under ``eval/attr/``. ``wandb=offline|online|disabled`` (default:
the training run's ``logger.mode``, offline unless it was changed); ``wandb sync`` uploads it.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from pathlib import Path
from statistics import fmean
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cartoondiff import attributes
from cartoondiff.config import DATA_TARGETS, build
from cartoondiff.diffusion import Sampler
from cartoondiff.evaluate import metrics as M
from cartoondiff.evaluate.evaluator import (
    CONDITIONS,
    evaluate_generator,
    higher_is_better,
    metric_names,
    model_generator,
    reference_set,
    wandb_name,
)
from cartoondiff.evaluate.inception import InceptionFeatures
from cartoondiff.evaluate.judge import (
    TRAIN_DEFAULTS,
    load_classifier,
    load_or_train_classifier,
)
from cartoondiff.inference import load_trained
from cartoondiff.inference.checkpoint import CheckpointError
from cartoondiff.runs import cli, tracking
from cartoondiff.runs.devices import pick_device
from cartoondiff.runs.errors import (
    SEED_RULE,
    ArgumentError,
    ConfigError,
    is_int,
    is_number,
    is_seed,
    require,
)
from cartoondiff.runs.files import check_output, write_text_atomic
from cartoondiff.runs.folder import RunFolder
from cartoondiff.sample import sampler_from_options

USAGE = ("python -m cartoondiff.evaluate checkpoint=PATH [n=256] [guidance=0,2] "
         "[sampler=ddim,dpmpp2m] [steps=25,50] [eta=1] [seed=0] [out=eval.json] "
         "[wandb=offline]")
EXAMPLE = ("python -m cartoondiff.evaluate checkpoint=outputs/DATE/TIME/model_ema.pt n=256 "
           "guidance=0,1,2")
OPTIONS: dict[str, Any] = {
    "checkpoint": cli.Option(None, "the checkpoint to evaluate (a run's model_ema.pt, "
                             "model_best.pt or checkpoints/*.pt); required", "PATH"),
    "n": cli.Option(256, "samples per setting, one per condition (>= 2)"),
    "guidance": cli.Option(None, "guidance w, one value or a list (0,1,2); null: the run's own"),
    "sampler": cli.Option(None, "ddim | ddpm | dpmpp2m, one or a list; null: the run's own"),
    "steps": cli.Option(None, "sampling steps, one or a list (ddpm takes all T); null: the "
                        "run's own"),
    "eta": cli.Option(None, "DDIM noise, 0 to 1; null: the run's own"),
    "seed": cli.Option(0, "seed of the conditions and the sampling noise (same for every "
                       "setting)"),
    "out": cli.Option(None, "where the results are written (JSON); null: eval.json beside the "
                      "checkpoint (its run folder), refused if an earlier evaluation is there"),
    "device": cli.Option("auto", "auto | cpu | cuda"),
    "batch_size": cli.Option(256, "images generated per batch"),
    "conditions": cli.Option("heldout", "heldout: held-out avatars' own attributes (needs "
                             "labels) | random: attributes drawn uniformly"),
    "diversity_groups": cli.Option(8, "conditions sampled several times for the diversity "
                                   "numbers"),
    "diversity_per_group": cli.Option(4, "samples per diversity condition (>= 2)"),
    "classifier": cli.Option(None, "a saved attribute classifier (.pt); null: the one cached "
                             "for the checkpoint's data, trained on first use"),
    "classifier_epochs": cli.Option(None, "epochs of that training, when it happens; null: "
                                    "the run's own (its evaluate.classifier settings)"),
    "cache_dir": cli.Option(None, "data and classifier cache; null: $CARTOONDIFF_CACHE, else "
                            "the user cache (never a folder the checkpoint names)"),
    "data_root": cli.Option(None, "the Cartoon Set folder, where the checkpoint was trained on "
                            "one that is elsewhere here; null: the checkpoint's data.root"),
    "inception": cli.Option(None, "an Inception weights file: adds Inception FID; null: the "
                            "classifier's Fréchet distance only"),
    "wandb": cli.Option(None, "offline | online | disabled: the evaluation's own W&B run, "
                        "beside out; null: the training run's logger.mode"),
}
HEADLINE = ("hair_color", "face_color", "eye_color", "glasses", "hair")
SUMMARY = [name for name in metric_names() if name not in attributes.NAMES]


def as_list(value: Any, cast: type, key: str) -> list:
    """``2``, ``"0,1,2"`` or ``[0, 1]`` -> a list of ``cast`` values; errors name the key.
    None (not given) -> [None]."""
    if value is None:
        return [None]
    items = value.split(",") if isinstance(value, str) else (
        list(value) if isinstance(value, list | tuple) else [value])
    try:
        return [cast(str(v).strip()) for v in items]
    except ValueError:
        raise ArgumentError(key, value, f"{cast.__name__} value(s), comma-separated") from None


def settings_grid(opts: dict[str, Any], own: Sampler) -> list[Sampler]:
    """The sweep: every (sampler, steps, guidance), each checked by ``Sampler``; ddpm (all T
    steps) once per guidance. Options not given are ``own``'s (the run's sampler)."""
    grid: list[Sampler] = []
    for method, steps, w in itertools.product(as_list(opts["sampler"], str, "sampler"),
                                              as_list(opts["steps"], int, "steps"),
                                              as_list(opts["guidance"], float, "guidance")):
        sampler = sampler_from_options({"sampler": method, "steps": steps, "eta": opts["eta"],
                                        "guidance": w}, own)
        if sampler not in grid:
            grid.append(sampler)
    return grid


def check_options(opts: dict[str, Any]) -> None:
    """Every option checked before the checkpoint is read or anything is sampled."""
    checkpoint = opts["checkpoint"]
    require(checkpoint is not None and Path(str(checkpoint)).is_file(), "checkpoint", checkpoint,
            "an existing checkpoint file")
    checkpoint = Path(str(checkpoint))
    # the diversity samples are drawn at once, hence their upper bound
    for key, low, high in (("n", 2, math.inf), ("batch_size", 1, math.inf),
                           ("diversity_groups", 1, 1000), ("diversity_per_group", 2, 1000)):
        require(is_int(opts[key]) and low <= opts[key] <= high, key, opts[key],
                f"an integer >= {low}" if high == math.inf else f"an integer in [{low}, {high}]")
    require(is_seed(opts["seed"]), "seed", opts["seed"], SEED_RULE)
    epochs = opts["classifier_epochs"]
    require(epochs is None or (is_int(epochs) and 1 <= epochs <= 1000), "classifier_epochs",
            epochs, "null (the run's own) or an integer in [1, 1000]")
    require(opts["conditions"] in CONDITIONS, "conditions", opts["conditions"],
            f"one of {CONDITIONS}")
    run = RunFolder.of_checkpoint(checkpoint).root
    if opts["out"] is None:  # beside what it evaluates; an earlier result is never replaced
        # eval-<name>.json for a training checkpoint, so evaluations of two steps never share one
        in_checkpoints = checkpoint.expanduser().resolve().parent.name == "checkpoints"
        opts["out"] = str(run / (f"eval-{checkpoint.stem}.json" if in_checkpoints
                                 else "eval.json"))
        require(not Path(opts["out"]).exists(), "out", opts["out"], "the name of a new file: an "
                "earlier evaluation is there (keep it: name another out=...; or delete it)")
    # writable, before the judge is trained; never the checkpoint or its run's record
    check_output("out", str(opts["out"]), (".json",), inputs=[checkpoint, run])
    for key in ("classifier", "inception"):
        require(opts[key] is None or Path(str(opts[key])).is_file(), key, opts[key],
                "null or an existing file")
    require(opts["data_root"] is None or Path(str(opts["data_root"])).is_dir(), "data_root",
            opts["data_root"], "null or an existing folder")
    require(opts["wandb"] in (None, *tracking.MODES), "wandb", opts["wandb"],
            f"one of {tracking.MODES}")
    settings_grid(opts, Sampler())  # the sampler options given, checked before loading


def label(run: dict[str, Any]) -> str:
    return f"{run['sampler']}{run['steps']} w{run['guidance']:g}"


def finite_or_null(value: Any) -> Any:
    """NaN / inf -> None, recursively: strict JSON has no NaN (e.g. a relative score with
    no readable attribute); json writes them as NaN / Infinity, read back here as None."""
    return json.loads(json.dumps(value), parse_constant=lambda _: None)


def format_table(result: dict[str, Any]) -> str:
    """Rows: attributes (headline first) and summary metrics; columns: chance, ceiling, runs."""
    runs, chance, ceiling = result["runs"], result["chance"], result["classifier"]["accuracy"]
    cols = [label(r) for r in runs]
    width = max(11, *(len(c) + 1 for c in cols))
    head = f"{'metric':<26}{'chance':>8}{'ceiling':>8}" + "".join(f"{c:>{width}}" for c in cols)
    lines = ["faithfulness = classifier accuracy on generated avatars for the requested "
             "attributes; ceiling = its accuracy on held-out real avatars;",
             f"faithfulness_relative = mean accuracy / ceiling over the {len(result['readable'])}"
             " attributes read better than chance", head, "-" * len(head)]
    order = list(HEADLINE) + [n for n in attributes.NAMES if n not in HEADLINE]
    for i, name in enumerate(order):
        if i == len(HEADLINE):
            lines.append("")
        vals = "".join(f"{r['metrics'][name]:>{width}.3f}" for r in runs)
        lines.append(f"{name:<26}{chance[name]:>8.3f}{ceiling[name]:>8.3f}{vals}")
    lines.append("")
    for key in SUMMARY:
        if key not in runs[0]["metrics"]:
            continue
        ref = {"faithfulness_mean": (f"{fmean(chance.values()):>8.3f}",
                                     f"{fmean(ceiling.values()):>8.3f}"),
               "faithfulness_relative": ("", f"{1.0:>8.3f}")}.get(key, ("", ""))
        vals = "".join(f"{r['metrics'][key]:>{width}.3f}" for r in runs)
        lines.append(f"{key:<26}{ref[0]:>8}{ref[1]:>8}{vals}")
    seconds = "".join(f"{r['seconds']:>{width}.1f}" for r in runs)
    lines.append(f"{'seconds':<26}{'':>16}{seconds}")
    return "\n".join(lines)


def main(argv: list[str]) -> dict[str, Any]:
    args = cli.parse(argv, OPTIONS, USAGE, positional=False, about=__doc__, example=EXAMPLE)
    opts = args.options
    check_options(opts)
    device = pick_device(str(opts["device"]))
    trained = load_trained(opts["checkpoint"], device)
    grid = settings_grid(opts, trained.sampler)
    T = trained.diffusion.T
    for sampler in grid:
        sampler.check_steps(T)
    trained.cfg.data.cache_dir = opts["cache_dir"]  # the user's, never one the checkpoint names
    if opts["data_root"]:
        trained.cfg.data.root = opts["data_root"]
    try:  # the checkpoint's data section is data too: only the project's data module
        data_module = build(trained.cfg, "data", allowed=DATA_TARGETS)
    except ConfigError as err:
        raise CheckpointError(f"checkpoint {opts['checkpoint']}: its data config: {err}") from None
    data_module.setup(labeled=None)
    if opts["classifier"]:
        classifier = load_classifier(opts["classifier"], device)
    else:
        # the run's own judge (its settings name the cache file): the one its training used
        settings = dict(trained.cfg.get("evaluate", {}).get("classifier") or {})
        kinds = {int: is_int, float: is_number, str: lambda v: isinstance(v, str)}
        wrong = [k for k, v in settings.items()  # a checkpoint is data: its values are checked
                 if k not in TRAIN_DEFAULTS or not kinds[type(TRAIN_DEFAULTS[k])](v)]
        if wrong:
            raise CheckpointError(f"checkpoint {opts['checkpoint']}: evaluate.classifier has "
                                  f"unusable settings {wrong}; give classifier=PATH")
        if opts["classifier_epochs"] is not None:
            settings["epochs"] = opts["classifier_epochs"]
        classifier = load_or_train_classifier(data_module, data_module.cache_dir, device=device,
                                              **settings)
    inception = InceptionFeatures(opts["inception"]).to(device) if opts["inception"] else None
    ref = reference_set(data_module.data, classifier, int(opts["n"]), int(opts["seed"]),
                        str(opts["conditions"]), inception)

    runs = []
    for sampler in grid:
        generate_for = model_generator(trained.model, trained.diffusion, sampler,
                                       trained.image_size, trained.normalize, device,
                                       int(opts["batch_size"]))
        start = time.perf_counter()
        values = evaluate_generator(generate_for, classifier, ref, int(opts["seed"]),
                                    int(opts["diversity_groups"]),
                                    int(opts["diversity_per_group"]), inception)
        relative = M.relative_to_ceiling(values, classifier.accuracy)
        item = {"sampler": sampler.method, "steps": sampler.steps or T,
                "guidance": float(sampler.guidance), "eta": float(sampler.eta)}
        runs.append({**item, "seconds": time.perf_counter() - start, "metrics": values,
                     "relative": relative})
        print(f"evaluated {label(item)}: faithfulness {values['faithfulness_mean']:.3f}, "
              f"frechet_classifier {values['frechet_classifier']:.2f}", file=sys.stderr)

    result = {
        "checkpoint": str(opts["checkpoint"]),
        "conditional": trained.conditional,
        "image_size": trained.image_size, "n": len(ref.ids), "seed": int(opts["seed"]),
        "conditions": str(opts["conditions"]),
        "diversity": {"groups": int(opts["diversity_groups"]),
                      "per_group": int(opts["diversity_per_group"])},
        "classifier": {"path": str(classifier.path) if classifier.path else None,
                       "data_key": classifier.data_key, "accuracy": classifier.accuracy,
                       "settings": classifier.settings},
        "chance": M.chance_accuracy(),
        # the attributes faithfulness_relative averages over (ceiling above chance)
        "readable": sorted(M.relative_to_ceiling(classifier.accuracy, classifier.accuracy)),
        "runs": runs,
    }
    print(format_table(result))
    out = write_text_atomic(Path(str(opts["out"])),
                            json.dumps(finite_or_null(result), indent=1, allow_nan=False))
    print(f"wrote {out}")
    log_to_wandb(result, trained.cfg, out, opts)
    return result


def log_to_wandb(result: dict[str, Any], train_cfg: DictConfig, out: Path,
                 opts: dict[str, Any]) -> None:
    """The evaluation as a W&B run (``job_type=eval``) in the training run's project and
    group, saved under ``out``'s folder; see the module docstring."""
    logger = train_cfg.get("logger") or {}
    mode = str(opts["wandb"] or logger.get("mode") or "offline")
    train_name = logger.get("name")
    checkpoint = Path(str(opts["checkpoint"]))
    config = {
        "checkpoint": str(checkpoint), "n": result["n"], "seed": result["seed"],
        "conditions": result["conditions"], "diversity": result["diversity"],
        "settings": [{k: r[k] for k in ("sampler", "steps", "guidance", "eta")}
                     for r in result["runs"]],
        "classifier": {"path": result["classifier"]["path"],
                       "ceiling_mean": fmean(result["classifier"]["accuracy"].values())},
        "train_run": {"name": train_name,
                      "id": tracking.read_run_id(RunFolder.of_checkpoint(checkpoint).wandb_id)},
        "train": OmegaConf.to_container(train_cfg, resolve=True),
    }
    run = tracking.start_wandb(
        out.parent, mode, project=logger.get("project") or "cartoondiff",
        entity=logger.get("entity"), group=logger.get("group"),
        name=f"eval:{train_name}" if train_name else None, tags=list(logger.get("tags") or []),
        job_type=tracking.EVAL_JOB_TYPE, config=config)
    if run is None:
        return
    tracking.log_evaluation(run, finite_or_null(result["runs"]),
                            lambda key: "max" if higher_is_better(key) else "min", wandb_name)
    run.finish()
    print(f"W&B run {run.id} ({mode}) in {out.parent / 'wandb'}", file=sys.stderr)


def console() -> None:
    """Console script ``cartoondiff-evaluate``."""
    cli.execute(main)


if __name__ == "__main__":
    console()
