"""Checks on a composed run configuration, and where Hydra puts a run.

Every value is checked before any work starts; each problem is one line naming its key.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from cartoondiff.attributes import ENCODINGS
from cartoondiff.data.dataset import SOURCES
from cartoondiff.diffusion.samplers import SAMPLERS
from cartoondiff.models import ATTENTION_KINDS, PROJECTION_DEPTHS

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
PREDICTIONS = ("eps", "v")
SECTIONS = ("data", "model", "noise_schedule", "optim", "sampler", "logger", "trainer",
            "diffusion")
_PLAIN_INTERPOLATION = re.compile(r"^\$\{([\w.]+)\}$")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""


def _get(cfg: DictConfig, key: str, default: object = None) -> object:
    return OmegaConf.select(cfg, key, default=default)


def _require(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: expected {expected}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value that cannot work."""
    missing = [s for s in SECTIONS if s not in cfg]
    if missing:
        raise ConfigError(f"the config has no {missing[0]!r} section: compose conf/config.yaml "
                          "(python run.py, or hydra.compose) before calling train()")
    checks: list[tuple[str, object, str]] = [
        ("data.source", lambda v: v in SOURCES, f"one of {SOURCES}"),
        ("data.batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("data.image_size", lambda v: _is_int(v) and v >= 8, "an integer >= 8"),
        ("data.crop", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("data.normalize", lambda v: v in ("pm1", "unit"), "pm1 or unit"),
        ("data.on_error", lambda v: v in ("raise", "skip"), "raise or skip"),
        ("attention.kind", lambda v: v in ATTENTION_KINDS, f"one of {ATTENTION_KINDS}"),
        ("attention.num_heads", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("tau.encoding", lambda v: v in ENCODINGS, f"one of {ENCODINGS}"),
        ("tau.projections", lambda v: v in PROJECTION_DEPTHS, f"one of {tuple(PROJECTION_DEPTHS)}"),
        ("optim.optimizer.lr", lambda v: _is_num(v) and v > 0, "a number > 0"),
        ("diffusion.p_uncond", lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
        ("diffusion.prediction", lambda v: v in PREDICTIONS, f"one of {PREDICTIONS}"),
        ("noise_schedule.T", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("sampler.sampler", lambda v: v in SAMPLERS, f"one of {SAMPLERS}"),
        ("sampler.guidance", lambda v: _is_num(v) and v >= 0, "a number >= 0"),
        ("sampler.eta", lambda v: _is_num(v) and 0 <= v <= 1, "a number in [0, 1]"),
        ("sampler.steps", lambda v: v is None or (_is_int(v) and v >= 1),
         "null or an integer >= 1"),
        ("trainer.device", lambda v: v in DEVICES, f"one of {DEVICES}"),
        ("trainer.strategy", lambda v: v in ("single", "ddp"), "single or ddp"),
        ("trainer.precision", lambda v: v in PRECISIONS, f"one of {PRECISIONS}"),
        ("trainer.grad_accum", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("trainer.grad_clip", lambda v: _is_num(v) and v > 0, "a number > 0"),
        ("trainer.ema_decay", lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
        ("trainer.max_steps", lambda v: v is None or (_is_int(v) and v >= 1),
         "null or an integer >= 1"),
        ("trainer.max_epochs", lambda v: _is_num(v) and v > 0, "a number > 0"),
        ("trainer.max_bad_steps", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        ("trainer.log_every", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("trainer.checkpoint_every", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("trainer.keep_checkpoints", lambda v: _is_int(v) and v >= 0,
         "an integer >= 0 (0 keeps all)"),
        ("trainer.sample_every_epochs", lambda v: v is None or (_is_int(v) and v >= 0),
         "an integer >= 0 (0 never samples during training)"),
        ("trainer.sample_rows", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("trainer.sample_cols", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("logger.mode", lambda v: v in ("offline", "online", "disabled"),
         "offline, online or disabled"),
        ("evaluate.every_epochs", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: never)"),
        ("evaluate.n", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ]
    for key, ok, expected in checks:
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            continue  # groups that a config leaves out are checked where they are used
        value = OmegaConf.select(cfg, key)
        _require(ok(value), key, value, expected)

    world = int(os.environ.get("WORLD_SIZE", 1))
    if _get(cfg, "trainer.strategy") == "ddp":
        batch = cfg.data.batch_size
        _require(batch % world == 0, "data.batch_size", batch,
                 f"a multiple of the {world} processes (it is the global batch)")
    _check_schedule(cfg)
    _check_unet(cfg)
    if _get(cfg, "data.source") == "synthetic":
        n, batch = _get(cfg, "data.n"), cfg.data.batch_size
        _require(_is_int(n) and n >= batch, "data.n", n, f"an integer >= data.batch_size={batch}")
    if _get(cfg, "data.source") == "cartoonset":
        root = _get(cfg, "data.root")
        _require(root is not None and Path(str(root)).expanduser().is_dir(), "data.root", root,
                 "an existing directory holding Cartoon Set (csNNNN.png + csNNNN.csv)")
    resume = _get(cfg, "resume")
    _require(resume in (None, "auto") or Path(str(resume)).expanduser().is_file(), "resume",
             resume, "null, auto, or the path of an existing checkpoint file")


def _check_schedule(cfg: DictConfig) -> None:
    schedule, T = cfg.noise_schedule, cfg.noise_schedule.T
    if "beta_start" in schedule:
        b0, b1 = schedule.beta_start, schedule.beta_end
        _require(_is_num(b0) and _is_num(b1) and 0 < b0 < b1 < 1,
                 "noise_schedule.beta_start/beta_end", (b0, b1), "0 < beta_start < beta_end < 1")
    steps = _get(cfg, "sampler.steps")
    ddpm = _get(cfg, "sampler.sampler") == "ddpm"  # always runs all T steps
    _require(ddpm or steps is None or steps <= T, "sampler.steps", steps,
             f"at most noise_schedule.T={T} (the sampler visits a subset of the T steps)")


def _check_unet(cfg: DictConfig) -> None:
    """What the UNet constructor would refuse, reported under the key a user sets."""
    unet = _get(cfg, "model.unet")
    if not isinstance(unet, DictConfig):
        return
    base, mults = unet.base_channels, unet.channel_mults
    _require(_is_int(base) and base >= 1, "model.unet.base_channels", base, "an integer >= 1")
    _require(isinstance(mults, ListConfig) and len(mults) > 0
             and all(_is_int(m) and m >= 1 for m in mults),
             "model.unet.channel_mults", mults, "a non-empty list of integers >= 1")
    levels, size = len(mults), unet.image_size
    factor = 2 ** (levels - 1)
    _require(size % factor == 0, _origin(cfg, "model.unet.image_size"), size,
             f"a multiple of {factor}, so the UNet's {levels} levels "
             "(model.unet.channel_mults) can halve it")
    sizes = [size // 2**i for i in range(levels)]
    widths = [base * m for m in mults]  # channels at each level
    res = list(unet.attention_resolutions)
    _require(all(r in sizes for r in res), "model.unet.attention_resolutions", res,
             f"sizes of the UNet's levels {sizes}")
    groups = unet.norm_groups
    _require(_is_int(groups) and groups >= 1 and all(w % groups == 0 for w in widths),
             "model.unet.norm_groups", groups, f"a divisor of every level's width {widths}")
    if unet.attention == "mha" or unet.get("self_attention", False):
        heads = unet.num_heads
        for w, r in zip(widths, sizes):
            if r in res:
                _require(w % heads == 0, _origin(cfg, "model.unet.num_heads"), heads,
                         f"a divisor of {w}, the UNet's width at {r}x{r} "
                         "(model.unet.base_channels x channel_mults)")


def _origin(cfg: DictConfig, key: str) -> str:
    """The key a value is set by: follows plain ``${other.key}`` interpolations."""
    for _ in range(8):  # interpolation chains are short; this also stops cycles
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        raw = OmegaConf.to_container(node, resolve=False).get(leaf)
        match = _PLAIN_INTERPOLATION.match(raw) if isinstance(raw, str) else None
        if match is None:
            return key
        key = match.group(1)
    return key


def resume_command(run_dir: Path) -> str:
    """The command that continues this run from its latest checkpoint."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return f"train(cfg, run_dir={str(run_dir)!r}) with resume=auto in cfg"
    keep = [o for o in HydraConfig.get().overrides.task
            if not o.startswith(("resume=", "hydra.run.dir="))]
    return shlex.join(["python", "run.py", *keep, "resume=auto", f"hydra.run.dir={run_dir}"])


def resolve_run_dir() -> Path:
    """Hydra's output directory for this run or multirun job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        raise ConfigError("no Hydra run directory: call train(cfg, run_dir=...) outside run.py")
    return Path(HydraConfig.get().runtime.output_dir)
