"""How every ``python -m cartoondiff.*`` command reads its arguments and reports mistakes.

One parser for all of them: ``key=value`` options (``--key value`` and ``--key=value`` mean
the same), plus positional arguments such as run folders. Each command declares its options
as ``Option(default, meaning)``; ``--help`` (or ``-h``) prints the usage, the command's
description, every option with its default and meaning, and an example, and exits 0. An
argument is an option only if its key is one of the command's option names, so a folder whose
name holds ``=`` (Hydra's ``multirun/.../0_attention=single``) is a positional argument like
any other. Commands that take Hydra overrides (``figures forward``) receive the other
``key=value`` arguments.

``execute`` runs a command and turns a ``UserError`` (a bad option, file or checkpoint) into
one line on stderr and exit status 2; ``CARTOONDIFF_DEBUG=1`` (or ``HYDRA_FULL_ERROR=1``)
keeps the traceback for debugging.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig

from cartoondiff.runs.errors import UserError

USAGE_ERROR = 2  # the exit status of a usage mistake, as argparse and most Unix tools use
COMMAND_ENV = "CARTOONDIFF_COMMAND"  # how the training command was typed (its help, resumes)
DEBUG_VARIABLES = ("CARTOONDIFF_DEBUG", "HYDRA_FULL_ERROR")


def conf_dir() -> Path:
    """The Hydra configs: the copy an installed wheel holds (``cartoondiff/conf``, built from
    the repository's ``conf/`` and ``experiments/`` by setup.py), else the source tree's
    ``conf/`` beside the package (a checkout, or an editable install)."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "conf"
    return packaged if (packaged / "config.yaml").is_file() else package.parent / "conf"


_KEY = re.compile(r"^[A-Za-z_][\w.]*$")


class UsageError(UserError):
    """A command line the command cannot run; the message says what to type instead."""


@dataclass(frozen=True)
class Option:
    """One ``key=value`` option: its default and what it means (shown by ``--help``).
    ``value`` names what to type where the default is None and the option is required."""

    default: Any
    help: str
    value: str | None = None


HELP_FLAGS = ("-h", "--help")


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _as_typed(text: str) -> str:
    """``python -m cartoondiff.sample`` -> ``cartoondiff-sample`` when run as that command."""
    prog = Path(sys.argv[0]).name if sys.argv else ""
    if prog.startswith("cartoondiff-"):
        return re.sub(r"python -m cartoondiff(\.\w+)*", prog, text)
    return text


def help_text(usage: str, options: Mapping[str, Option], about: str = "", example: str = "",
              ) -> str:
    """``--help``: usage, ``about`` (e.g. the module docstring), every option with its default
    and meaning, and ``example``."""
    rows = [(f"{key}={o.value if o.value and o.default is None else _shown(o.default)}", o.help)
            for key, o in options.items()]
    rows.append(("-h, --help", "show this help and exit"))
    width = min(max(len(r[0]) for r in rows) + 2, 28)
    lines = [f"usage: {_as_typed(usage)}", ""]
    if about.strip():
        lines += [textwrap.dedent(about).strip(), ""]
    lines.append("options (key=value; --key value and --key=value mean the same; shown with "
                 "their defaults):")
    for name, meaning in rows:
        wrapped = textwrap.wrap(meaning, 96 - width) or [""]
        if len(name) + 2 > width:  # on a line of its own, the meaning below it
            lines.append(f"  {name}")
            name = ""
        lines.append(f"  {name:<{width}}{wrapped[0]}")
        lines += [f"  {'':<{width}}{w}" for w in wrapped[1:]]
    if example:
        lines += ["", "example:", f"  {_as_typed(example)}"]
    return "\n".join(lines)


def exit_with_help(text: str) -> NoReturn:
    """Print a command's help on stdout and exit 0 (also when piped into ``head``)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:  # the reader left: no traceback (the Python docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(0)


@dataclass
class Arguments:
    """A parsed command line: typed options (defaults filled in), positional arguments and
    unclaimed ``key=value`` overrides (only for commands that accept them)."""

    options: dict[str, Any]
    positional: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)


def value(text: str) -> Any:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"true"`` -> True, ``"null"`` -> None, else the text."""
    lowered = text.strip().lower()
    if lowered in ("null", "none", "~"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse(argv: Sequence[str], options: Mapping[str, Option], usage: str,
          overrides: bool = False, *, positional: bool = True, about: str = "",
          example: str = "") -> Arguments:
    """Split ``argv`` into options (named in ``options``), positional arguments (a
    UsageError unless ``positional``) and, if ``overrides``, Hydra overrides. ``usage`` ends
    each error message; ``-h``/``--help`` anywhere prints ``help_text`` and exits 0."""
    if any(item in HELP_FLAGS for item in argv):
        exit_with_help(help_text(usage, options, about, example))
    args = Arguments({key: option.default for key, option in options.items()})
    given: dict[str, str] = {}  # an option given twice is a mistake, not last-wins

    def set_option(key: str, text: str) -> None:
        if key in given:
            raise UsageError(f"option {key} is given twice ({key}={given[key]}, {key}={text})")
        given[key] = text
        args.options[key] = value(text)

    items = iter(argv)
    for item in items:
        dashed = item.startswith("--") and len(item) > 2
        key, sep, text = (item[2:] if dashed else item).partition("=")
        if dashed:
            key = key.replace("-", "_")
            if key not in options:
                raise UsageError(f"unknown option --{key}; options: {', '.join(options)}"
                                 f" (usage: {usage})")
            if not sep and (text := next(items, None)) is None:
                raise UsageError(f"--{key} needs a value (usage: {usage})")
            set_option(key, text)
        elif sep and key in options:
            set_option(key, text)
        elif sep and _KEY.match(key) and not os.path.exists(item):
            if not overrides:
                raise UsageError(f"unknown option {key}; options: {', '.join(options)} "
                                 f"(usage: {usage})")
            args.overrides.append(item)
        else:
            args.positional.append(item)
    if args.positional and not positional:
        raise UsageError(f"unexpected argument(s) {args.positional} (usage: {usage})")
    return args


def execute(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> None:
    """Run a command's ``main(argv)``: a ``UserError`` becomes one line and exit status 2."""
    try:
        main(sys.argv[1:] if argv is None else argv)
    except UserError as err:
        if any(os.environ.get(v, "") not in ("", "0") for v in DEBUG_VARIABLES):
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None


def compose(overrides: Sequence[str]) -> DictConfig:
    """conf/config.yaml composed with Hydra ``overrides``, as ``python run.py`` would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        lines = str(err).strip().splitlines()
        hint = [line for line in lines[1:2] if line.startswith("To append")]  # +key=value
        raise UsageError(" ".join(lines[:1] + hint)) from None
