"""What a run is called: its W&B name, group, tags and job type, and its multirun folder.

A sweep (``python run.py -m attention=single,mha4 tau.projections=1x,2x``) becomes one W&B
group whose runs are named by what differs between them (``attention=mha4,tau.projections=2x``)
and whose folders are ``multirun/DATE/TIME/3_attention=mha4,tau.projections=2x``. Which
overrides a sweep varies is read from the sweep's ``multirun.yaml`` (Hydra writes it before the
first job starts, for every launcher) with Hydra's own override parser, so ``a,b``, ``range()``
and ``choice()`` all count. Paths shrink to their last component and long values to a prefix
plus a hash, so no value makes nested folders or a name too long for the file system.
``labels_for`` says how every label is chosen, for sweeps, experiments and plain runs.

``run_title`` reads a run folder's name back the way W&B groups it (runs with one title are
seeds of one experiment), for the report and the figures.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cartoondiff.runs.errors import first_line
from cartoondiff.runs.folder import RESULT_NEUTRAL, is_under
from cartoondiff.runs.records import read_run_config, read_text

log = logging.getLogger(__name__)

SUBDIR_RESOLVER = "cartoondiff.sweep_subdir"
# Overrides that say where or how a run executes, not what it is, are left out of run names:
# the run folder's one list of result-neutral keys, and Hydra's own groups (hydra/launcher=...).
def _plumbing(key: str) -> bool:
    return key.startswith("hydra/") or is_under(key, RESULT_NEUTRAL)


# Shown by the group (and the scale tag) rather than the name, unless a sweep varies them.
IN_GROUP = ("experiment", "scale")
NO_SCALE = "blog"  # an experiment run without scale=cpu|gpu runs at the blog's own settings
MAX_VALUE = 32     # characters of one value in a name; longer ones become prefix~hash
MAX_NAME = 100     # characters of a whole name (a folder name may have 255 bytes)
MAX_TAG = 64       # W&B refuses longer tags
_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+\-\[\]@~]")
JOB_TYPE = "train"  # W&B job type of a training run ("eval": an evaluation's run)
PLAIN = "run"      # a plain run without overrides: run@STAMP
STAMP = re.compile(rf"(^{PLAIN})?@\d{{4}}-\d{{6}}-[0-9a-f]{{4}}$")  # plain_name's (with a bare run)
SWEEP_GROUP = "sweep-"  # + DATE_TIME: the W&B group of a plain sweep's runs
_NAME_PARTS = re.compile(r",(?=[\w.+~/-]+=)")  # "a=1,b=[1,2]" -> "a=1", "b=[1,2]"


def plain_name(base: str | None) -> str:
    """``base@MMDD-HHMMSS-xxxx``: a name no other run has (the start time, four random hex
    digits for runs started in the same second)."""
    return f"{base or PLAIN}@{time.strftime('%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def strip_stamp(name: str) -> str:
    """A plain run's name without its time stamp (``run@...`` alone: empty)."""
    return STAMP.sub("", name)


@dataclass(frozen=True)
class RunLabels:
    """How one run appears in W&B. ``config`` is added to the run's W&B config."""

    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    job_type: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def wandb_args(self) -> dict[str, Any]:
        return {"name": self.name, "group": self.group, "tags": self.tags,
                "job_type": self.job_type}


@dataclass(frozen=True)
class _Item:
    key: str    # config key or group, without +/~ prefixes
    value: str  # as typed (a sweep's job gets one value of the sweep)
    swept: bool = False  # a sweep: a,b, range(), choice()...


def _parse(overrides: Iterable[str]) -> list[_Item]:
    """Each override, parsed by Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [_Item(o.key_or_group, f"~{o.key_or_group}" if o.is_delete() else
                  o.get_value_string(), o.is_sweep_override())
            for o in OverridesParser.create().parse_overrides(list(overrides))]


def short_value(value: str) -> str:
    """A value fit for a name or folder: a path becomes its last part, a long value its start
    plus a hash, and characters a file system or shell may dislike become ``_``."""
    text = str(value).strip("'\"")
    if "/" in text or "\\" in text:
        text = next((p for p in reversed(re.split(r"[/\\]+", text)) if p), "root")
    return _cut(_UNSAFE.sub("_", text), MAX_VALUE, value)


def _cut(text: str, limit: int, whole: str) -> str:
    """``text``, or past ``limit`` characters its start plus a hash of ``whole``."""
    digest = hashlib.sha1(whole.encode()).hexdigest()[:8]
    return text if len(text) <= limit else f"{text[:limit - 9]}~{digest}"


def describe(items: Sequence[_Item]) -> str:
    """``key=value,key=value`` with short values, cut to ``MAX_NAME`` characters (plus a hash
    of the whole when cut, so two long names still differ)."""
    text = ",".join(f"{i.key}={short_value(i.value)}" for i in items)
    return _cut(text, MAX_NAME, text)


def swept_items(job_overrides: Sequence[str], sweep_overrides: Sequence[str] | None
                ) -> list[_Item]:
    """This job's value of each key the sweep varies, in command-line order.

    ``sweep_overrides`` is the sweep's command line (None when unknown: then every override
    but the plumbing counts, as in Hydra's own folder names).
    """
    job = _parse(job_overrides)
    if sweep_overrides is None:
        return [i for i in job if not _plumbing(i.key)]
    swept = [i.key for i in _parse(sweep_overrides) if i.swept]
    return [i for i in job if i.key in swept and not i.key.startswith(("hydra.", "hydra/"))]


def labels_for(
    *,
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    job_type: str | None = None,
    job_overrides: Sequence[str] = (),
    sweep_overrides: Sequence[str] | None = None,
    multirun: bool = False,
    sweep_dir: str | Path | None = None,
    choices: Mapping[str, str | None] | None = None,
) -> RunLabels:
    """The W&B labels of a run from its logger settings (``name``, ``group``, ``tags``,
    ``job_type``: the user's or an experiment's, used when set) and what Hydra knows of it.

    - group: ``logger.group`` when given on the command line; an experiment's group plus its
      scale (``fig12_tau2x-cpu``: CPU-scale and GPU-scale runs of one figure never share a
      group); else one group per sweep (``sweep-DATE_TIME``, after the
      sweep folder); else ``logger.group`` (None for a single plain run).
    - name: a sweep job's swept keys (``attention=mha4,tau.projections=2x``); an experiment
      run's overrides without plumbing and without what the group says, else the experiment's
      name; a plain run's overrides (without plumbing) plus a time stamp (``plain_name``:
      ``optim.optimizer.lr=0.001@1202-091733-a1f3``, ``run@1202-091733-a1f3`` with none).
    - tags: ``logger.tags``, ``scale=...`` and each swept ``key=value`` (W&B filters on tags).
    - job_type: ``train`` (the scale is a tag and part of an experiment's group).
    - config: ``sweep`` (swept key -> this run's value) and ``choices`` (every config group's
      option, e.g. ``choices.attention=mha4``), so the dashboard can filter and group on them.
    """
    choices = {k: v for k, v in (choices or {}).items() if not k.startswith("hydra/")}
    job = _parse(job_overrides)
    experiment = choices.get("experiment")
    scale = choices.get("scale") or (NO_SCALE if experiment else None)

    swept = swept_items(job_overrides, sweep_overrides) if multirun else []
    rest = describe([i for i in job if not (_plumbing(i.key) or i.key.startswith(IN_GROUP))])
    if name:
        pass
    elif swept:
        name = describe(swept)
    elif experiment or multirun:
        name = rest or experiment
    else:
        name = plain_name(rest)

    if group and any(i.key == "logger.group" for i in job):
        pass  # the user's own group, as typed
    elif experiment:
        group = f"{group or experiment}-{scale}"
    elif not group and multirun and sweep_dir is not None:
        group = SWEEP_GROUP + "_".join(Path(sweep_dir).parts[-2:])

    extra = [f"scale={scale}"] if scale else []
    extra += [f"{i.key}={short_value(i.value)}" for i in swept]
    all_tags = list(dict.fromkeys([*map(str, tags), *extra]))  # unique, in order
    config = {"choices": dict(choices)}
    if multirun:
        config["sweep"] = {i.key: i.value for i in swept}
    return RunLabels(name=name, group=group, tags=[t for t in all_tags if len(t) <= MAX_TAG],
                     job_type=job_type or JOB_TYPE, config=config)


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
    if group and not str(group).startswith(SWEEP_GROUP):
        return str(group)
    base = strip_stamp(str(name)) if name else ""  # a time stamp names the run, not the experiment
    title = ",".join(p for p in _NAME_PARTS.split(base) if not p.startswith("seed="))
    return title or str(group or base or Path(run_dir).name)


def read_sweep_overrides(sweep_dir: str | Path) -> list[str] | None:
    """The sweep's overrides as typed (plus ``hydra.sweeper.params``), from the
    ``multirun.yaml`` Hydra's sweeper saves in the sweep folder; None if there is none."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.exists():
        return None
    try:  # the sweep folder is read back: a damaged file names itself, the run goes on
        saved = OmegaConf.create(read_text(path))
        params = OmegaConf.select(saved, "hydra.sweeper.params") or {}
        task = OmegaConf.select(saved, "hydra.overrides.task") or []
        return [f"{k}={v}" for k, v in params.items()] + [str(o) for o in task]
    except Exception as err:  # bad YAML, a list where a mapping belongs, an unreadable file
        log.warning("%s is not a readable sweep record (%s); naming the run without it", path,
                    first_line(err))
        return None


def run_labels(logger: DictConfig | Mapping[str, Any]) -> RunLabels:
    """``labels_for`` this process's run: ``logger`` is the ``logger`` config section, the rest
    comes from Hydra (none outside ``run.py``, e.g. ``train(cfg)`` from a notebook: then the
    logger's settings, a run without a name named as a plain run is)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    given = {"name": logger.get("name"), "group": logger.get("group"),
             "tags": list(logger.get("tags") or []), "job_type": logger.get("job_type")}
    if not HydraConfig.initialized():
        return labels_for(**given)
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return labels_for(
        **given, job_overrides=list(hc.overrides.task),
        sweep_overrides=read_sweep_overrides(hc.sweep.dir) if multirun else None,
        multirun=multirun, sweep_dir=hc.sweep.dir if multirun else None,
        choices=OmegaConf.to_container(hc.runtime.choices),
    )


def sweep_subdir(num: int, job_overrides: Sequence[str], sweep_dir: str) -> str:
    """A sweep job's folder: ``NUM_key=value,...`` of the keys the sweep varies; where it
    varies none (``-m`` with one job), of its overrides but the plumbing, as its W&B name
    (``NUM_run`` with none). ``hydra.sweep.subdir`` in conf/config.yaml calls it, as the
    resolver ``${cartoondiff.sweep_subdir:NUM,OVERRIDES,SWEEP_DIR}``."""
    swept = (swept_items(list(job_overrides), read_sweep_overrides(sweep_dir))
             or swept_items(list(job_overrides), None))
    return f"{num}_{describe(swept) if swept else PLAIN}"


class RegisterResolvers(Callback):
    """A Hydra callback (``hydra.callbacks`` in conf/config.yaml) that registers the resolver
    naming sweep folders (``sweep_subdir``) before a sweep starts. Hydra hands registered
    resolvers on to the processes its launchers start (joblib, submitit), so every job can
    name its folder."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:  # noqa: ARG002
        OmegaConf.register_new_resolver(SUBDIR_RESOLVER, sweep_subdir, replace=True)
