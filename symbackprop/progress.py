"""Progress on a terminal: one line on standard error, redrawn in place, for long steps.

Silent unless standard error is a terminal, so that logs, pipes and tests see nothing, and
never on standard output, whose last lines are machine-readable.  ``Bar(label)`` draws
``label [#####.....]  42%`` as ``update(fraction)`` is called and wipes the line on
``close()`` (or at the end of a ``with`` block).
"""

from __future__ import annotations

import sys
from typing import TextIO

WIDTH = 24  # characters of the bar itself


class Bar:
    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.label = label
        try:
            self.live = bool(self.stream.isatty())
        except (AttributeError, ValueError):  # no isatty, or a closed stream
            self.live = False
        self.shown = ""

    def update(self, fraction: float, note: str = "") -> None:
        if not self.live:
            return
        fraction = min(max(fraction, 0.0), 1.0)
        filled = round(WIDTH * fraction)
        line = f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {100 * fraction:3.0f}%"
        if note:
            line += f"  {note}"
        self._draw(line)

    def close(self) -> None:
        if self.live and self.shown:
            self._draw("")
        self.shown = ""

    def _draw(self, line: str) -> None:
        padding = " " * max(0, len(self.shown) - len(line))
        try:
            self.stream.write(f"\r{line}{padding}\r" if not line else f"\r{line}{padding}")
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: progress is not worth failing
            self.live = False
        self.shown = line

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
