"""A stop request that long inner loops honour, so a run stops within seconds of a signal.

The training loop turns SIGTERM / SIGINT into a request (``train.loop.StopFlag``); the
attribute classifier's training and the samplers call ``check()`` once per batch or step and
raise ``Interrupted`` when one is pending, so a preemption during an evaluation does not wait
for it to finish. Outside a training run nothing requests a stop and ``check()`` costs one
comparison.
"""

from __future__ import annotations

_requested: int | None = None


class Interrupted(Exception):  # noqa: N818 -- a request, not a failure
    """Raised by ``check()`` when a stop was requested; ``signal`` is the signal number."""

    def __init__(self, signal: int) -> None:
        super().__init__(f"stopped by signal {signal}")
        self.signal = signal


def request(signal: int) -> None:
    """Ask every loop that calls ``check()`` to stop."""
    global _requested
    _requested = signal


def clear() -> None:
    global _requested
    _requested = None


def requested() -> int | None:
    """The signal of a pending stop request, or None."""
    return _requested


def check() -> None:
    """Raise ``Interrupted`` if a stop was requested."""
    if _requested is not None:
        raise Interrupted(_requested)
