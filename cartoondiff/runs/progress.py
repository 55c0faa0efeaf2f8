"""Progress bars that suit where they are shown.

On a terminal, tqdm's live bar. Anywhere else (a log file, a pipe, a batch job's output) one
plain line every 10 % of the work: tqdm redraws its bar with carriage returns many times a
second, which a log file keeps as thousands of lines.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

LINE_EVERY = 0.1  # off a terminal: one line per this fraction of the total
LINE_EVERY_S = 60.0  # ... or per minute, when the total is unknown


class _Lines:
    """A stream for tqdm that turns each redraw into one line (no carriage returns), skipping a
    redraw at the same count (closing a bar redraws its last state)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip()
        count = line.split(" [", 1)[0]  # "desc: 40%|####  | 400/1000", without times and rates
        if line and count != self.last:
            self.stream.write(line + "\n")
            self.last = count
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Iterable | None = None, *, total: float | None = None,
                 desc: str | None = None, enabled: bool = True, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, total=..., desc=..., **kwargs)`` on stderr: a live bar on a terminal,
    a line every 10 % elsewhere, nothing when not ``enabled``."""
    if not enabled:
        return tqdm(iterable, total=total, desc=desc, disable=True)
    stream = sys.stderr
    if stream.isatty():
        return tqdm(iterable, total=total, desc=desc, file=stream, **kwargs)
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    kwargs.pop("dynamic_ncols", None)
    every = max(1, math.ceil(total * LINE_EVERY)) if total else None
    return tqdm(iterable, total=total, desc=desc, file=_Lines(stream), ncols=80,
                miniters=every, mininterval=0.0 if every else LINE_EVERY_S,
                maxinterval=math.inf, **kwargs)
