"""What the GPU session reads back from its runs: logged metrics, checkpoints, evaluation JSON,
and the numbers the verdict on the blog's claims 5 and 6 rests on (bench/gpu_session.py)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from cartoondiff.runs.records import read_metrics


def metrics_rows(run_dir: Path) -> list[dict]:
    """The run's metrics.jsonl rows; none when the run never started logging."""
    path = run_dir / "metrics.jsonl"
    return read_metrics(path) if path.exists() else []


def run_summary(run_dir: Path) -> dict:
    """Steps, throughput and loss a run logged (metrics.jsonl), its checkpoints and grids."""
    rows = metrics_rows(run_dir)
    train = [r for r in rows if "train/loss" in r]
    ips = [r["train/images_per_s"] for r in train if "train/images_per_s" in r]
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")) \
        if (run_dir / "checkpoints").is_dir() else []
    grids = sorted(p.name for p in (run_dir / "samples").glob("*.png")) \
        if (run_dir / "samples").is_dir() else []
    return {
        "last_step": train[-1]["step"] if train else None,
        "images_per_s_median": statistics.median(ips) if ips else None,
        "loss_first": train[0]["train/loss"] if train else None,
        "loss_last": train[-1]["train/loss"] if train else None,
        "epoch_last": train[-1].get("train/epoch") if train else None,
        "checkpoints": ckpts, "grids": grids,
        "model_ema": (run_dir / "model_ema.pt").exists(),
        "wandb_offline_runs": len(list((run_dir / "wandb").glob("offline-run-*")))
        if (run_dir / "wandb").is_dir() else 0,
    }


def latest_model(run_dir: Path) -> Path | None:
    """model_ema.pt, else the newest checkpoint (whose EMA weights evaluate loads)."""
    if (run_dir / "model_ema.pt").exists():
        return run_dir / "model_ema.pt"
    ckpts = sorted((run_dir / "checkpoints").glob("ckpt-step*.pt"))
    return ckpts[-1] if ckpts else None


def eval_summary(path: Path) -> dict | None:
    """Per-attribute faithfulness, its mean, Fréchet and diversity from an evaluate JSON."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        run = result["runs"][0]
    except (OSError, ValueError, KeyError, IndexError):  # missing, or cut off by a timeout
        return None
    names = list(result["chance"])
    m = run["metrics"]
    n = result["n"]
    hair = m.get("hair_color")
    return {
        "n": n, "sampler": f"{run['sampler']} eta={run['eta']} steps={run['steps']} "
                           f"w={run['guidance']}", "seconds": run["seconds"],
        "faithfulness": {k: m[k] for k in names if k in m},
        "faithfulness_mean": m.get("faithfulness_mean"),
        "faithfulness_relative": m.get("faithfulness_relative"),
        "frechet_classifier": m.get("frechet_classifier"),
        "diversity_within": m.get("diversity_within"),
        "hair_color_se": math.sqrt(hair * (1 - hair) / n) if hair is not None and n else None,
        "classifier_ceiling": result["classifier"]["accuracy"], "chance": result["chance"],
    }


def compare_claims(runs: list[dict]) -> dict:
    """The numbers the verdict on claims 5 and 6 rests on (differences with their SE)."""
    by = {r["name"]: r.get("eval") for r in runs}

    def diff(a: str, b: str, key: str) -> dict | None:
        ea, eb = by.get(a), by.get(b)
        if not ea or not eb:
            return None
        va = ea["faithfulness"].get(key) if key in ea["faithfulness"] else ea.get(key)
        vb = eb["faithfulness"].get(key) if key in eb["faithfulness"] else eb.get(key)
        if va is None or vb is None:
            return None
        out = {"a": va, "b": vb, "a_minus_b": va - vb}
        if key == "hair_color":  # two independent binomial proportions
            out["se"] = math.sqrt(va * (1 - va) / ea["n"] + vb * (1 - vb) / eb["n"])
        return out

    scored = [(r["name"], r["eval"]) for r in runs if r.get("eval")]
    return {
        "claim5_hair_color_mha4_minus_single": {
            "tau1x": diff("mha4_tau1x", "single_tau1x", "hair_color"),
            "tau2x": diff("mha4_tau2x", "single_tau2x", "hair_color")},
        "claim6_rank_by_faithfulness_mean": [n for n, e in sorted(
            scored, key=lambda x: -(x[1]["faithfulness_mean"] or 0))],
        "claim6_rank_by_hair_color": [n for n, e in sorted(
            scored, key=lambda x: -(x[1]["faithfulness"].get("hair_color") or 0))],
        "claim6_rank_by_frechet": [n for n, e in sorted(
            scored, key=lambda x: x[1]["frechet_classifier"] or float("inf"))],
    }
