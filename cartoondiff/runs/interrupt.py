"""A stop request that long inner loops honour, so a run stops within seconds of a signal.

The training loop turns SIGTERM / SIGINT into a request (``StopFlag``); the
attribute classifier's training and the samplers call ``check()`` once per batch or step and
raise ``Interrupted`` when one is pending, so a preemption during an evaluation does not wait
for it to finish. Outside a training run nothing requests a stop and ``check()`` costs one
comparison.
"""

from __future__ import annotations

import contextlib
import signal as signals
from typing import Any

_requested: int | None = None


class Interrupted(Exception):  # noqa: N818 -- a request, not a failure
    """Raised by ``check()`` when a stop was requested; ``signal`` is the signal number."""

    def __init__(self, signal: int) -> None:
        super().__init__(f"stopped by signal {signal}")
        self.signal = signal


def _request(signal: int | None) -> None:
    """Ask every loop that calls ``check()`` to stop (None: no longer)."""
    global _requested
    _requested = signal


def check() -> None:
    """Raise ``Interrupted`` if a stop was requested."""
    if _requested is not None:
        raise Interrupted(_requested)


class StopFlag:
    """Turns SIGTERM / SIGINT into a flag the loop checks after each step.

    The first signal puts the previous handlers back, so a second Ctrl-C stops at once
    (checkpoints are written atomically, so that loses at most the current interval).
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        _request(None)
        for sig in (signals.SIGTERM, signals.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._old[sig] = signals.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        self.signal = signum
        _request(signum)  # grids, evaluations and the classifier stop within a step
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._old.items():
            signals.signal(sig, handler)
        self._old.clear()

    def __exit__(self, *exc: object) -> None:
        self._restore()
        _request(None)
