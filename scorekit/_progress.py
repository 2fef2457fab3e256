"""Progress of a batch run: a bar on a terminal, plain log lines elsewhere (cron, journald)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30
REDRAW_SECONDS = 0.2  # a terminal bar redraws at most this often
LOG_SECONDS = 10.0  # a log line at most this often when not on a terminal


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """``update(done, failed)`` as rows are scored; ``close()`` ends the bar's line. ``total``
    may be None (a CSV file's row count is not known in advance): then no percentage or ETA."""

    def __init__(
        self,
        total: int | None,
        what: str,
        stream: TextIO | None = None,
        tty: bool | None = None,
        done_before: int = 0,
    ) -> None:
        self.total = total
        self.what = what
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self._shown = self.started if not self.tty else 0.0
        self._drawn = False
        self._done_before = done_before  # rows a resumed run had done: not in the rate

    def line(self, done: int, failed: int) -> str:
        elapsed = time.monotonic() - self.started
        rate = (done - self._done_before) / elapsed if elapsed > 0 else 0.0
        parts = [f"{done:,}"]
        if self.total:
            share = min(done / self.total, 1.0)
            parts = [f"{100 * share:3.0f}%", f"{done:,}/{self.total:,} rows"]
            if self.tty:
                filled = int(BAR_WIDTH * share)
                parts.insert(0, "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]")
        else:
            parts.append("rows")
        parts.append(f"{rate:,.0f} rows/s")
        if failed:
            parts.append(f"{failed:,} failed")
        if self.total and rate > 0 and done < self.total:
            parts.append(f"ETA {_clock((self.total - done) / rate)}")
        return f"{self.what}: " + " ".join(parts)

    def update(self, done: int, failed: int = 0, force: bool = False) -> None:
        """Show the progress if it is time to; ``force`` redraws a terminal's bar now (log
        lines stay periodic: the run's summary line follows them)."""
        now = time.monotonic()
        every = REDRAW_SECONDS if self.tty else LOG_SECONDS
        if not (force and self.tty) and now - self._shown < every:
            return
        self._shown = now
        if self.tty:
            self.stream.write("\r\033[K" + self.line(done, failed))
            self._drawn = True
        else:
            self.stream.write(f"scorekit: {self.line(done, failed)}\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
