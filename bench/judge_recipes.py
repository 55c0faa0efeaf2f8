"""Benchmark: judge recipes, each trained once, read under every perturbation.

For every recipe (a JSON object of ``train_classifier`` settings; ``{}`` = the defaults) it
trains the attribute classifier on the default run's data (synthetic, n = 10,000, 32 px),
reports the process CPU time of the training (comparable on a shared machine, unlike wall
time) and the held-out accuracy under each perturbation of ``cartoondiff.evaluate.judge.perturb``
(perturbation seed 1), for the attributes the issue's floors name plus the mean of 18.

    python bench/judge_recipes.py '{}' \
        '{"stem": 0, "epochs": 8, "max_shift": 0, "blur_p": 0, "noise_p": 0}'

(the judge, then version 1: no stem, no perturbations, 8 epochs).

Recipes run one after another on one thread; run two commands at once to use two cores.
The tables in docs/evaluation.md ("How robust the judge is") were made with it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cartoondiff.data.dataset import load_avatar_data  # noqa: E402
from cartoondiff.evaluate.judge import train_classifier  # noqa: E402
from cartoondiff.evaluate.judge.__main__ import robustness  # noqa: E402

SHOWN = ("glasses", "facial_hair", "face_shape", "hair", "face_color", "hair_color")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+", help="JSON objects of train_classifier settings")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default=".cache/cartoondiff")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_avatar_data("synthetic", image_size=32, crop=360, n=10000, seed=0,
                            cache_dir=args.cache_dir, progress=False)
    for recipe in args.recipes:
        settings = json.loads(recipe)
        cpu = time.process_time()
        clf = train_classifier(data.images, data.ids, **settings)
        cpu = time.process_time() - cpu
        print(f"{recipe}: training {cpu:.0f} s CPU ({args.threads} thread(s))")
        for kind, acc in robustness(clf, data.images, data.ids, seed=1).items():
            print(f"  {kind:12s}" + " ".join(f"{n}={acc[n]:.3f}" for n in SHOWN)
                  + f" mean={sum(acc.values()) / len(acc):.3f}", flush=True)


if __name__ == "__main__":
    main()
