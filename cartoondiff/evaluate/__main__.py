"""Evaluate a trained checkpoint: faithfulness per attribute, Fréchet distance, diversity.

    python -m cartoondiff.evaluate checkpoint=PATH n=256 guidance=0,1,2,3,5 \\
        sampler=ddim steps=20,50 seed=0 out=eval.json

``guidance``, ``sampler`` and ``steps`` take one value or a comma-separated list; every
combination is evaluated on the same conditions and seeds (ddpm always runs all T steps,
so it appears once per guidance). The attribute classifier is trained on the checkpoint's
own data (same source, size and crop) on first use and cached under
``<data cache_dir>/classifiers``. Prints a table, writes JSON to ``out``. See
docs/evaluation.md for what each number means.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf

from cartoondiff import attributes
from cartoondiff.devices import pick_device
from cartoondiff.diffusion.samplers import SAMPLERS
from cartoondiff.diffusion.samplers import sample as run_sampler
from cartoondiff.evaluate import metrics as M
from cartoondiff.evaluate.classifier import load_classifier, load_or_train_classifier
from cartoondiff.evaluate.evaluator import (
    diffusion_generator,
    evaluate_generator,
    reference_set,
)
from cartoondiff.evaluate.inception import InceptionFeatures
from cartoondiff.inference import load_trained

DEFAULTS: dict[str, Any] = {
    "checkpoint": None, "n": 256, "guidance": 2.0, "sampler": "ddim", "steps": 50,
    "eta": 0.0, "seed": 0, "out": "eval.json", "device": "auto", "batch_size": 256,
    "conditions": "heldout", "diversity_groups": 8, "diversity_per_group": 4,
    "classifier": None, "classifier_epochs": 8, "cache_dir": None, "data_root": None,
    "inception": None,
}
HEADLINE = ("hair_color", "face_color", "eye_color", "glasses", "hair")
SUMMARY = ("faithfulness_mean", "faithfulness_relative", "frechet_classifier", "fid_inception",
           "diversity_within", "diversity_across", "diversity_real", "diversity_within_features",
           "diversity_across_features", "diversity_real_features", "coverage", "coverage_real")


def as_list(value: Any, cast: type, key: str) -> list:
    """``2``, ``"0,1,2"`` or ``[0, 1]`` -> a list of ``cast`` values; errors name the key."""
    items = value.split(",") if isinstance(value, str) else (
        list(value) if OmegaConf.is_list(value) or isinstance(value, list | tuple) else [value])
    try:
        return [cast(str(v).strip()) if cast is not str else str(v).strip() for v in items]
    except ValueError:
        raise SystemExit(f"error: {key}={value!r}: expected {cast.__name__} value(s)") from None


def settings_grid(opts: Any, T: int) -> list[dict[str, Any]]:  # noqa: N803
    """The sweep: every (sampler, steps, guidance), ddpm once per guidance with steps=T."""
    samplers = as_list(opts.sampler, str, "sampler")
    bad = [s for s in samplers if s not in SAMPLERS]
    if bad:
        raise SystemExit(f"error: sampler={bad[0]!r} is not one of {SAMPLERS}")
    steps = as_list(opts.steps, int, "steps")
    guidance = as_list(opts.guidance, float, "guidance")
    if any(w < 0 for w in guidance) or any(s < 1 or s > T for s in steps):
        raise SystemExit(f"error: need guidance >= 0 and 1 <= steps <= T={T}, got "
                         f"guidance={guidance}, steps={steps}")
    grid: list[dict[str, Any]] = []
    for sampler, k, w in itertools.product(samplers, steps, guidance):
        item = {"sampler": sampler, "steps": T if sampler == "ddpm" else k, "guidance": w,
                "eta": float(opts.eta)}
        if item not in grid:
            grid.append(item)
    return grid


def finite_or_null(value: Any) -> Any:
    """NaN / inf -> None, recursively: strict JSON has no NaN (e.g. a relative score with
    no readable attribute)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_null(v) for v in value]
    return value


def label(run: dict[str, Any]) -> str:
    return f"{run['sampler']}{run['steps']} w{run['guidance']:g}"


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
    mean_chance = sum(chance.values()) / len(chance)
    mean_ceiling = sum(ceiling.values()) / len(ceiling)
    for key in SUMMARY:
        if key not in runs[0]["metrics"]:
            continue
        ref = {"faithfulness_mean": (f"{mean_chance:>8.3f}", f"{mean_ceiling:>8.3f}"),
               "faithfulness_relative": ("", f"{1.0:>8.3f}")}.get(key, ("", ""))
        vals = "".join(f"{r['metrics'][key]:>{width}.3f}" for r in runs)
        lines.append(f"{key:<26}{ref[0]:>8}{ref[1]:>8}{vals}")
    seconds = "".join(f"{r['seconds']:>{width}.1f}" for r in runs)
    lines.append(f"{'seconds':<26}{'':>16}{seconds}")
    return "\n".join(lines)


def main(argv: list[str]) -> dict[str, Any]:
    opts = OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.from_dotlist(argv))
    unknown = set(opts) - set(DEFAULTS)
    if unknown:
        raise SystemExit(f"error: unknown option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    if not opts.checkpoint:
        raise SystemExit("error: checkpoint=PATH is required")
    if opts.n < 2:
        raise SystemExit(f"error: n={opts.n}: need n >= 2")
    try:
        device = pick_device(str(opts.device))
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    trained = load_trained(opts.checkpoint, device)
    grid = settings_grid(opts, trained.diffusion.T)

    data_cfg = trained.cfg.data
    if opts.cache_dir:
        data_cfg.cache_dir = opts.cache_dir
    if opts.data_root:
        data_cfg.root = opts.data_root
    data_module = instantiate(data_cfg).setup()
    cache_dir = Path(data_cfg.cache_dir).expanduser()
    if opts.classifier:
        classifier = load_classifier(opts.classifier, device)
    else:
        classifier = load_or_train_classifier(data_module, cache_dir, device=device,
                                              epochs=int(opts.classifier_epochs))
    inception = InceptionFeatures(opts.inception).to(device) if opts.inception else None
    ref = reference_set(data_module.data, classifier, int(opts.n), int(opts.seed),
                        str(opts.conditions), inception)

    runs = []
    for item in grid:
        sample_fn = functools.partial(run_sampler, sampler=item["sampler"], steps=item["steps"],
                                      eta=item["eta"], guidance=item["guidance"])
        generate = diffusion_generator(trained.model, trained.diffusion, sample_fn,
                                       trained.image_size, trained.value_range,
                                       data_module.denormalize, device, int(opts.batch_size))
        start = time.perf_counter()
        values = evaluate_generator(generate, classifier, ref, int(opts.seed),
                                    int(opts.diversity_groups), int(opts.diversity_per_group),
                                    inception)
        relative = M.relative_to_ceiling(values, classifier.accuracy)
        runs.append({**item, "seconds": time.perf_counter() - start, "metrics": values,
                     "relative": relative})
        print(f"evaluated {label(item)}: faithfulness {values['faithfulness_mean']:.3f}, "
              f"frechet_classifier {values['frechet_classifier']:.2f}", file=sys.stderr)

    result = {
        "checkpoint": str(opts.checkpoint),
        "conditional": bool(getattr(trained.model, "conditional", False)),
        "image_size": trained.image_size, "n": len(ref.ids), "seed": int(opts.seed),
        "conditions": str(opts.conditions),
        "diversity": {"groups": int(opts.diversity_groups),
                      "per_group": int(opts.diversity_per_group)},
        "classifier": {"path": str(classifier.path) if classifier.path else None,
                       "data_key": classifier.data_key, "accuracy": classifier.accuracy,
                       "settings": classifier.settings},
        "chance": M.chance_accuracy(),
        # the attributes faithfulness_relative averages over (ceiling above chance)
        "readable": sorted(M.relative_to_ceiling(classifier.accuracy, classifier.accuracy)),
        "runs": runs,
    }
    print(format_table(result))
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(finite_or_null(result), indent=1, allow_nan=False),
                   encoding="utf-8")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
