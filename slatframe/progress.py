"""A small progress bar for the terminal: count, rate and ETA on one redrawn line.

Drawn on stderr only when it is a terminal (and the command is not ``--quiet``); redrawn
with a carriage return at most ``1 / min_interval`` times a second. No dependency.
"""
from __future__ import annotations

import shutil
import sys
import time
from typing import Any, Callable, TextIO

BAR_WIDTH = 24


def format_count(n: float) -> str:
    """``1234567`` -> ``"1.23M"``; small numbers as integers."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.3g}{suffix}"
    return f"{n:.3g}" if n != int(n) else str(int(n))


def format_duration(seconds: float) -> str:
    """``75`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"``."""
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def render(label: str, done: int, total: int | None, elapsed: float, unit: str,
           width: int = 80) -> str:
    """The text of the bar, at most ``width`` characters:
    ``label [####....] done/total unit  rate/s  ETA m:ss``; without a known total (or
    past it): ``label done unit  rate/s  elapsed``."""
    rate = done / elapsed if elapsed > 0 else 0.0
    rate_text = f"{format_count(rate)}/s" if done else "-/s"
    if total is None or total <= 0 or done > total:
        return f"{label} {done:,} {unit}  {rate_text}  {format_duration(elapsed)}"[:width]
    eta = format_duration((total - done) / rate) if rate > 0 else "-"
    rest = f" {done:,}/{total:,} {unit}  {rate_text}  ETA {eta}"
    bar_width = min(BAR_WIDTH, width - len(label) - len(rest) - 3)
    if bar_width < 5:
        return (label + rest)[:width]
    filled = int(bar_width * done / total)
    return f"{label} [{'#' * filled}{'.' * (bar_width - filled)}]{rest}"


class Progress:
    """One progress line on ``stream``; a no-op unless ``enabled`` (default: stream is a TTY)."""

    def __init__(self, label: str, total: int | None = None, unit: str = "", *,
                 stream: TextIO | None = None, enabled: bool | None = None,
                 min_interval: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_tty(self.stream) if enabled is None else enabled
        self.label, self.total, self.unit = label, total, unit
        self.min_interval, self.clock = min_interval, clock
        self.start = clock()
        self.done = 0
        self._last_draw: float | None = None
        self._width = 0

    def update(self, done: int, *, force: bool = False) -> None:
        """Set the count; redraw if the last redraw is at least ``min_interval`` old."""
        self.done = done
        if not self.enabled:
            return
        now = self.clock()
        if force or self._last_draw is None or now - self._last_draw >= self.min_interval:
            self._draw(now)

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def write(self, line: str) -> None:
        """Print ``line`` on the stream above the bar (the bar is cleared and redrawn)."""
        self._clear()
        print(line, file=self.stream, flush=True)
        if self.enabled and self._last_draw is not None:
            self._draw(self.clock())

    def close(self) -> None:
        """Remove the bar from the terminal."""
        self._clear()
        self._last_draw = None

    def _draw(self, now: float) -> None:
        cols = shutil.get_terminal_size((80, 24)).columns - 1
        text = render(self.label, self.done, self.total, now - self.start, self.unit, cols)
        self.stream.write("\r" + text + " " * max(0, self._width - len(text)))
        self.stream.flush()
        self._width = len(text)
        self._last_draw = now

    def _clear(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class RunProgress:
    """A run observer (``started``/``chunk``/``finished``) drawing trace records done.

    The total is the workload's ``accesses`` option when it has one (control records of
    some workloads come on top: past it, the bar shows the count and the rate only).
    """

    def __init__(self, *, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream, self.enabled = stream, enabled
        self.bar: Progress | None = None

    def started(self, config: Any) -> None:
        total = getattr(config.workload.options, "accesses", None)
        self.bar = Progress(config.experiment.name, total if isinstance(total, int) else None,
                            "records", stream=self.stream, enabled=self.enabled)
        self.bar.update(0, force=True)

    def chunk(self, config: Any, done: int, n: int) -> None:
        if self.bar is not None:
            self.bar.update(done)

    def finished(self, config: Any, result: Any) -> None:
        if self.bar is not None:
            self.bar.close()
