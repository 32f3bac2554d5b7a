"""Training progress on stderr: a tqdm bar when the stream is a terminal, otherwise one plain line per
epoch (log files and pipes get no carriage-return frames)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``mm:ss``, or ``h:mm:ss`` from one hour."""
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _fmt_info(info: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())


class Progress:
    """``update(n, **info)`` after each batch, ``close()`` at the end of the epoch. ``start`` batches are
    already done (a resumed epoch); ``enabled=False`` prints nothing."""

    def __init__(
        self, total: int, desc: str = "", stream: TextIO | None = None, enabled: bool = True, start: int = 0
    ) -> None:
        self.total, self.desc, self.enabled = total, desc, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.n = self._start = start
        self.info: dict = {}
        self._t0 = time.monotonic()
        live = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = (
            tqdm(total=total, initial=start, desc=desc, file=self.stream, dynamic_ncols=True, mininterval=0.5)
            if live
            else None
        )

    def update(self, n: int = 1, **info) -> None:
        self.n += n
        self.info = info
        if self._bar is not None:
            self._bar.set_postfix_str(_fmt_info(info), refresh=False)
            self._bar.update(n)

    def line(self) -> str:
        """The epoch's summary: batches done, elapsed time, rate and the last ``info``."""
        elapsed = time.monotonic() - self._t0
        rate = (self.n - self._start) / elapsed if elapsed > 0 else 0.0
        return (
            f"{self.desc} {self.n}/{self.total} batches in {format_duration(elapsed)} ({rate:.2f} it/s) "
            f"{_fmt_info(self.info)}"
        ).rstrip()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
