"""What a resumed run may be: the checkpoint it continues from and the same-run rule.

``resume=auto`` takes the newest checkpoint of ``RUN_DIR/checkpoints`` that loads; a resumed run
is the same run, so every setting that changes the result must match the checkpoint's unless
``resume_changes`` names it (``same_run_changes``); both keys are checked before any work
(``check_resume_keys``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cartoondiff.inference import checkpoint as ckpt
from cartoondiff.runs.errors import ConfigError
from cartoondiff.runs.folder import RESULT_NEUTRAL, is_under, list_checkpoints

log = logging.getLogger(__name__)

# What a training checkpoint holds beyond the weights (model_ema.pt has only "model").
TRAINING_STATE = ("model", "ema", "optimizer", "scheduler", "scaler", "randomness", "step")
# Also free on resume, though they show in a run's name: how long it trains, what it draws
# and how it is evaluated, where its data lives (a folder moves between machines; the data
# cache checks what it holds), and the recipe (a name for values compared one by one).
CONTINUABLE = (*RESULT_NEUTRAL, "trainer.max_steps", "trainer.max_epochs", "trainer.sample_",
               "evaluate", "sampler", "figures", "blog_epochs", "data.root", "recipe")
# What no resume may change, named or not: the saved optimizer and schedule state is that
# class's.
NOT_CHANGEABLE = ("optim.optimizer._target_", "optim.scheduler._target_")
_ABSENT = object()


def config_changes(saved: object, current: object, prefix: str) -> list[str]:
    """``key: saved -> current`` for each leaf where two nested config dicts differ."""
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        return [change for key in sorted(set(saved) | set(current), key=str)
                for change in config_changes(saved.get(key), current.get(key),
                                             f"{prefix}.{key}")]
    if saved == current:
        return []
    short = [("{...}" if isinstance(v, Mapping) else repr(v)) for v in (saved, current)]
    return [f"{prefix}: {short[0]} -> {short[1]}"]


def resume_state(resume: str | None, ckpt_dir: Path) -> tuple[Path, dict] | None:
    """``resume=PATH``, or ``resume=auto``: the newest checkpoint of this run that loads (each
    damaged one skipped with a warning), None when there is none at all."""
    if not resume:
        return None
    if resume != "auto":
        return Path(resume), ckpt.load(resume)
    saved = list_checkpoints(ckpt_dir)
    for path in reversed(saved):
        try:
            return path, ckpt.load(path)
        except ckpt.CheckpointError as err:
            log.warning("%s; falling back to the checkpoint before it", err)
    if saved:
        raise ckpt.CheckpointError(f"resume=auto: no checkpoint in {ckpt_dir} loads (see the "
                                   "warnings above); move them aside to start fresh")
    print(f"resume=auto: no checkpoint in {ckpt_dir}, starting fresh")
    return None


def same_run_changes(path: Path, state: dict, cfg: DictConfig) -> list[str]:
    """``key: old -> new`` for each setting of ``cfg`` that differs from the checkpoint's and
    was named in ``cfg.resume_changes``; any other change of a setting that alters the result
    (not how long the run trains, where it runs or what it logs) is a ConfigError.

    A resumed run is the same run; a weights-only export is no training checkpoint."""
    if missing := [k for k in TRAINING_STATE if k not in state]:
        raise ckpt.CheckpointError(
            f"resume={path} is not a training checkpoint (it has no {missing[0]!r}; a "
            "model_ema.pt or model_best.pt export holds weights only): resume from "
            "checkpoints/ckpt-step*.pt, or pass it to python -m cartoondiff.sample")
    saved = state.get("config") if isinstance(state.get("config"), dict) else {}
    current = OmegaConf.to_container(cfg, resolve=True)
    changes = [c[1:] for c in config_changes(saved, current, "")  # ".key: old -> new"
               if not is_under(c[1:], CONTINUABLE)]
    if fixed := [c for c in changes if is_under(c, NOT_CHANGEABLE)]:  # named via a parent key
        raise ConfigError(f"resume: {_not_changeable(fixed[0].split(':')[0])}")
    allowed = tuple(OmegaConf.select(cfg, "resume_changes") or ())
    if refused := [c for c in changes if not is_under(c, allowed)]:
        keys = ",".join(c.split(":")[0] for c in refused)
        raise ConfigError(
            f"resume: {path} is from a run with other settings ({'; '.join(refused)}); a "
            "resumed run must be the same run: resume with its settings, or name the changes "
            f"you mean: resume_changes=[{keys}]")
    return changes


def check_resume_keys(cfg: DictConfig) -> None:
    """``resume`` (null, auto or an existing checkpoint file) and ``resume_changes`` (existing
    keys of ``cfg``, none of them ``NOT_CHANGEABLE``); checked before any work (a ConfigError
    naming the first bad entry)."""
    resume = OmegaConf.select(cfg, "resume")
    if not (resume in (None, "auto") or Path(str(resume)).expanduser().is_file()):
        raise ConfigError(f"resume={resume!r} is invalid: expected null, auto, or the path of "
                          "an existing checkpoint file")
    listed = OmegaConf.select(cfg, "resume_changes") or []
    if not isinstance(listed, Sequence) or isinstance(listed, str):
        raise ConfigError(f"resume_changes={listed!r} is invalid: expected a list of config "
                          "keys, e.g. resume_changes=[optim.optimizer.lr]")
    listed = list(listed)
    if unknown := [k for k in listed if not (isinstance(k, str) and k and OmegaConf.select(
            cfg, k, default=_ABSENT, throw_on_missing=False) is not _ABSENT)]:
        raise ConfigError(f"resume_changes={listed!r} is invalid: expected keys of the config "
                          f"(e.g. optim.optimizer.lr); {unknown[0]!r} is none")
    if fixed := [k for k in listed if is_under(k, NOT_CHANGEABLE)]:
        raise ConfigError(f"resume_changes={listed!r} is invalid: {_not_changeable(fixed[0])}")


def _not_changeable(key: str) -> str:
    return (f"{key} cannot change on resume (the checkpoint's optimizer and schedule state "
            "belong to the class it names): start a new run")
