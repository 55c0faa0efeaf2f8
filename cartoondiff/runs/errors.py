"""The errors a user can cause, and how a constructor says which of its arguments is wrong.

Every mistake a user can make (a config value, a data file, a checkpoint, a command-line
option) raises a subclass of ``UserError`` whose message is one line naming the key or file.
The command-line entry points print that line and exit with status 2 instead of a traceback
(``cartoondiff.runs.cli``); anything else is a bug and keeps its traceback.

Constructors check their own arguments and raise ``ArgumentError(name, value, expected)``;
``cartoondiff.config.build`` adds the config key the argument came from, so each rule is
written once, where it lives, and the message still names what the user typed.
"""

from __future__ import annotations

import sys


class UserError(Exception):
    """A mistake in what the user gave; the message is one line naming the key or file."""


class ArgumentError(UserError, ValueError):
    """A constructor argument that cannot work: ``name=value is invalid: expected ...``."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        self.name, self.value, self.expected = name, value, expected
        super().__init__(f"{name}={value!r} is invalid: expected {expected}")


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work; the message names the key."""


def is_int(value: object) -> bool:
    """True for an int that is not a bool (YAML's ``true`` must not pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """True for a finite int or float that is not a bool (and an int a float can hold)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and value == value and abs(value) <= sys.float_info.max)


# Every command's seeds (run, sample, evaluate, the data set's and the grids'): one range,
# which python's, numpy's and torch's generators all take, with room for per-rank offsets.
SEED_RULE = "an integer in [0, 2**31)"


def is_seed(value: object) -> bool:
    """True for a seed every command accepts (``SEED_RULE``)."""
    return is_int(value) and 0 <= value < 2**31


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def require(ok: bool, name: str, value: object, expected: str) -> None:
    """Raise ``ArgumentError(name, value, expected)`` unless ``ok``."""
    if not ok:
        raise ArgumentError(name, value, expected)
