"""Build objects from a composed config: each node's ``_target_`` called with the node's keys.

Constructors check their own arguments and raise ``ArgumentError``; ``build`` turns that into
a ``ConfigError`` naming the key the user set (``model.unet.num_heads=3 is invalid: ...``,
following ``${...}`` interpolations back to where the value was written), so every rule is
written once, in the class it belongs to.

Two nodes are composed once and joined at build time: the model's ``tau`` is the ``tau`` node
(``conf/tau``) and the diffusion's ``betas`` the ``noise_schedule`` node (``conf/noise_schedule``),
so ``tau.projections=2x`` exists once in the config, in ``config.yaml`` and in W&B
(``build_model``, ``build_diffusion``).

A config read from a file (inside a checkpoint) is data, not code: ``build(..., allowed=...)``
calls only the listed project classes and refuses every other ``_target_`` and Hydra's other
special keys before anything is imported or called.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cartoondiff.runs.errors import ArgumentError, ConfigError, UserError, first_line

# Hydra's keys that change how a node is called; `_partial_` is the only one configs use.
SPECIAL_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
_PLAIN_INTERPOLATION = re.compile(r"^\$\{([\w.]+)\}$")

# The classes a trained model's stored config may rebuild, section by section.
MODEL_TARGETS = ("cartoondiff.models.Denoiser", "cartoondiff.models.UNet",
                 "cartoondiff.models.Tau", "cartoondiff.models.PerAttributeTau")
DIFFUSION_TARGETS = ("cartoondiff.diffusion.Diffusion",
                     "cartoondiff.diffusion.schedules.linear_betas",
                     "cartoondiff.diffusion.schedules.cosine_betas")
DATA_TARGETS = ("cartoondiff.data.module.AvatarDataModule",)
SAMPLER_TARGETS = ("cartoondiff.diffusion.Sampler",)


def build(cfg: DictConfig, key: str, allowed: Collection[str] | None = None,
          **call_kwargs: Any) -> Any:
    """Instantiate the node at ``key`` of ``cfg``, with errors that name the key.

    ``call_kwargs`` are arguments known only at run time (an optimizer's ``params``): they
    complete a ``_partial_`` node, which is then called at once so that its own checks run
    here. ``allowed``: the only ``_target_`` names accepted anywhere in the node (for configs
    read from files); None trusts the config (the user's own). An ``ArgumentError`` about a
    value given in ``call_kwargs`` names it from the config's root, as the constructor does
    (the Denoiser's ``tau.context_dim`` is the ``tau`` node's key).
    """
    try:
        node = OmegaConf.select(cfg, key, throw_on_missing=True)
        if node is None:
            raise ConfigError(f"{key} is missing from the config")
        plain = OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        where = getattr(err, "full_key", None) or ""
        if "Missing mandatory value" in str(err):
            raise ConfigError(f"{where} is required but not set (pass {where}=...)") from None
        raise ConfigError(f"{where}: {first_line(err)}" if where else first_line(err)) from None
    return _build(cfg, plain, key, allowed, call_kwargs)


def _build(cfg: DictConfig, value: Any, key: str, allowed: Collection[str] | None,
           call_kwargs: Mapping[str, Any]) -> Any:
    if isinstance(value, list):
        return [_build(cfg, v, f"{key}.{i}", allowed, {}) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    target = value.get("_target_")
    odd = [k for k in value if k in SPECIAL_KEYS and k not in ("_target_", "_partial_")]
    if allowed is not None:
        odd += [k for k in value if k == "_partial_"]
        if target is not None and target not in allowed:
            raise ConfigError(f"{key}._target_={target!r} is not allowed here: expected one of "
                              f"{tuple(allowed)}")
    if odd:
        raise ConfigError(f"{key}.{odd[0]} is not supported in cartoondiff configs")
    kwargs = {k: _build(cfg, v, f"{key}.{k}", allowed, {}) for k, v in value.items()
              if k not in SPECIAL_KEYS and k not in call_kwargs}  # a given value is not built
    if target is None:
        return kwargs
    try:
        factory = get_object(target)
    except Exception as err:  # ImportError, AttributeError, ...: a _target_ that is not there
        raise ConfigError(f"{key}._target_={target!r} cannot be imported: {err}") from None
    if value.get("_partial_") and not call_kwargs:
        return functools.partial(factory, **kwargs)
    try:
        return factory(**{**kwargs, **call_kwargs})  # run-time values win, as in a partial
    except ArgumentError as err:
        given = err.name.split(".")[0] in call_kwargs  # not a key of this node
        where = origin(cfg, err.name if given else f"{key}.{err.name}")
        raise ConfigError(f"{where}={err.value!r} is invalid: expected {err.expected}") from None
    except UserError:
        raise
    except (ValueError, TypeError) as err:  # third-party constructors (torch optimizers)
        where = _culprit(cfg, key, kwargs, str(err))
        raise ConfigError(f"{where} is invalid: {first_line(err)} ({target})") from None


def build_model(cfg: DictConfig, allowed: Collection[str] | None = None) -> Any:
    """The ``model`` node's Denoiser, its Tau built from the ``tau`` node when the UNet reads
    the context (cross-attention), else none (the vanilla model). The UNet is built first:
    the seed's weights depend on the order."""
    unet = build(cfg, "model.unet", allowed)
    tau = build(cfg, "tau", allowed) if unet.cross_attention else None
    return build(cfg, "model", allowed, unet=unet, tau=tau)


def build_diffusion(cfg: DictConfig, allowed: Collection[str] | None = None) -> Any:
    """The ``diffusion`` node's process on the ``noise_schedule`` node's betas."""
    return build(cfg, "diffusion", allowed, betas=build(cfg, "noise_schedule", allowed))


def _culprit(cfg: DictConfig, key: str, kwargs: Mapping[str, Any], message: str) -> str:
    """The one argument a third-party error is about (its value quoted in the message, or a
    string where the message complains of one), named as typed; else the node."""
    words = set(re.findall(r"[-+\w.]+", message))

    def mentioned(v: Any) -> bool:  # a scalar quoted in the message, or an item of a list
        if isinstance(v, (list, tuple)):
            return any(mentioned(item) for item in v)
        return isinstance(v, (int, float, str)) and not isinstance(v, bool) and (
            str(v) in words or repr(v) in message or (isinstance(v, str) and "'str'" in message))

    hits = [k for k, v in kwargs.items() if mentioned(v)]
    return f"{origin(cfg, f'{key}.{hits[0]}')}={kwargs[hits[0]]!r}" if len(hits) == 1 else key


def origin(cfg: DictConfig, key: str) -> str:
    """The key a value was written under: follows plain ``${other.key}`` interpolations of the
    key or of any node above it (``model.unet.image_size`` -> ``data.image_size``)."""
    for _ in range(8):  # chains are short; this also stops cycles
        parts = key.split(".")
        for i in range(1, len(parts) + 1):
            parent, leaf = ".".join(parts[:i - 1]), parts[i - 1]
            node = OmegaConf.select(cfg, parent) if parent else cfg
            if not isinstance(node, DictConfig) or leaf not in node:
                return key
            raw = OmegaConf.to_container(node, resolve=False).get(leaf)
            match = _PLAIN_INTERPOLATION.match(raw) if isinstance(raw, str) else None
            whole_node = i == len(parts) and isinstance(OmegaConf.select(cfg, key), DictConfig)
            if match and not whole_node:  # a node is named where it is used
                key = ".".join([match.group(1), *parts[i:]])
                break
        else:
            return key
    return key


@contextlib.contextmanager
def named(key: str) -> Iterator[None]:
    """Inside: an ``ArgumentError`` becomes a ``ConfigError`` naming config ``key``, for a
    value passed to a constructor by hand (``EMA(model, cfg.trainer.ema_decay)``)."""
    try:
        yield
    except ArgumentError as err:
        raise ConfigError(f"{key}={err.value!r} is invalid: expected {err.expected}") from None
