"""A one-line progress bar with rate and ETA on stderr (no dependency)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """``update(n, **info)`` redraws at most every ``interval`` seconds; ``close()`` ends the line."""

    def __init__(self, total: int, desc: str = "", stream: TextIO | None = None, enabled: bool = True,
                 interval: float = 0.5, start: int = 0) -> None:
        self.total, self.desc, self.enabled, self.interval = total, desc, enabled, interval
        self.stream = stream if stream is not None else sys.stderr
        self.n = start
        self._start_n = start
        self._t0 = time.monotonic()
        self._last = 0.0

    def line(self, info: dict | None = None) -> str:
        elapsed = time.monotonic() - self._t0
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else float("nan")
        width = 20
        filled = int(width * self.n / self.total) if self.total else width
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in (info or {}).items())
        eta_s = _fmt_time(eta) if rate > 0 else "?"
        return (f"{self.desc} [{'#' * filled}{'.' * (width - filled)}] {self.n}/{self.total} "
                f"{rate:.2f}it/s elapsed {_fmt_time(elapsed)} eta {eta_s} {extra}").rstrip()

    def update(self, n: int = 1, **info) -> None:
        self.n += n
        now = time.monotonic()
        if self.enabled and (now - self._last >= self.interval or self.n >= self.total):
            self._last = now
            self.stream.write("\r" + self.line(info) + "\033[K")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
