"""How well the judge reads avatars that are a little off: accuracy under each perturbation.

    python -m cartoondiff.evaluate.judge out=judge.json

Loads (or trains and caches, exactly as the first in-training evaluation of ``python run.py``
would) the attribute classifier of the run that the given Hydra overrides compose, applies
each perturbation of ``cartoondiff.evaluate.judge.perturb.KINDS`` (clean, shift1, shift2, blur,
noise, shift1_blur) to its held-out avatars, and writes JSON: one key per perturbation, each
mapping every attribute name to its accuracy, plus ``judge`` (file, settings, counts).
``classifier=PATH`` measures a saved classifier instead (it must have been trained on the
data the overrides compose). See docs/evaluation.md, "How robust the judge is".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cartoondiff import attributes
from cartoondiff.config import DATA_TARGETS, build
from cartoondiff.evaluate.judge import (
    ClassifierError,
    TrainedClassifier,
    data_identity,
    load_classifier,
    load_or_train_classifier,
)
from cartoondiff.evaluate.judge.perturb import KINDS, NOISE_SIGMA, perturb
from cartoondiff.evaluate.metrics import attribute_accuracy
from cartoondiff.runs import cli
from cartoondiff.runs.devices import pick_device
from cartoondiff.runs.errors import SEED_RULE, is_seed, require
from cartoondiff.runs.files import check_output, write_text_atomic

USAGE = ("python -m cartoondiff.evaluate.judge [out=judge.json] [seed=0] [classifier=PATH] "
         "[device=auto] [Hydra overrides of the run, e.g. data.image_size=64]")
EXAMPLE = "python -m cartoondiff.evaluate.judge out=judge.json data.image_size=64"
OPTIONS = {
    "out": cli.Option("judge.json", "the JSON written: perturbation -> attribute -> accuracy"),
    "seed": cli.Option(0, "seed of the perturbations (which way each avatar is shifted, the "
                       "noise)"),
    "classifier": cli.Option(None, "a saved judge (.pt) to measure; null: the run's own, "
                             "loaded from the cache or trained as python run.py would"),
    "device": cli.Option("auto", "auto | cpu | cuda"),
}
FOCUS = ("glasses", "facial_hair", "face_shape", "hair", "face_color", "hair_color")


def robustness(clf: TrainedClassifier, images: Any, ids: Any, seed: int = 0
               ) -> dict[str, dict[str, float]]:
    """Accuracy per attribute of ``clf`` on its held-out rows of (images, ids), under each
    perturbation in ``KINDS``: {kind: {attribute name: accuracy}}."""
    x, y = images[clf.heldout], ids[clf.heldout].long()
    return {kind: attribute_accuracy(clf.net.predict(perturb(x, kind, seed)), y)
            for kind in KINDS}


def format_table(result: dict[str, dict[str, float]]) -> str:
    """Rows: attributes (the small ones first) and the mean; columns: perturbations."""
    head = f"{'attribute':<22}" + "".join(f"{k:>12}" for k in KINDS)
    order = list(FOCUS) + [n for n in attributes.NAMES if n not in FOCUS]
    lines = [head, "-" * len(head)]
    lines += [f"{n:<22}" + "".join(f"{result[k][n]:>12.3f}" for k in KINDS) for n in order]
    lines.append(f"{'mean':<22}" + "".join(
        f"{sum(result[k].values()) / len(result[k]):>12.3f}" for k in KINDS))
    return "\n".join(lines)


def main(argv: list[str]) -> dict[str, Any]:
    args = cli.parse(argv, OPTIONS, USAGE, overrides=True, positional=False, about=__doc__,
                     example=EXAMPLE)
    opts = args.options
    out = check_output("out", str(opts["out"]), (".json",))  # writable, before the judge trains
    require(is_seed(opts["seed"]), "seed", opts["seed"], SEED_RULE)
    require(opts["classifier"] is None or Path(str(opts["classifier"])).is_file(), "classifier",
            opts["classifier"], "null or an existing file")
    cfg = cli.compose(args.overrides)
    device = pick_device(str(opts["device"]))
    data_module = build(cfg, "data", allowed=DATA_TARGETS).setup(labeled=True)
    data = data_module.data
    if opts["classifier"]:
        clf = load_classifier(opts["classifier"], device)
        if clf.data_key != data_identity(data):
            raise ClassifierError(f"classifier {opts['classifier']} was trained on other data "
                                  f"({clf.data_key}, not {data_identity(data)}); give the "
                                  "overrides of its run")
    else:  # the run's own judge: the same settings and cache file as python run.py's
        settings = dict(cfg.evaluate.get("classifier") or {})
        clf = load_or_train_classifier(data_module, data_module.cache_dir, device=device,
                                       **settings)
    result: dict[str, Any] = robustness(clf, data.images, data.ids, int(opts["seed"]))
    print(format_table(result))
    result["judge"] = {"path": str(clf.path) if clf.path else None, "data_key": clf.data_key,
                       "settings": clf.settings, "n_heldout": len(clf.heldout),
                       "perturbation_seed": int(opts["seed"]), "noise_sigma": NOISE_SIGMA}
    write_text_atomic(out, json.dumps(result, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    cli.execute(main)
