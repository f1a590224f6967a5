"""A tiny progress reporter for long work (stderr, one line per update, with ETA)."""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, "evaluating") as p: ... p.advance(note="case 3")``.

    Writes ``label  3/10  30%  elapsed 0:12  eta 0:28  note`` lines to stderr, at most every
    ``interval`` seconds (and always for the last item), so logs stay readable.
    """

    def __init__(self, total: int, label: str, *, stream=None, interval: float = 2.0, enabled: bool = True) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.enabled = enabled
        self.done = 0
        self.start = time.monotonic()
        self._last = 0.0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if not self.enabled or (now - self._last < self.interval and self.done < self.total):
            return
        self._last = now
        elapsed = now - self.start
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        print(
            f"{self.label}  {self.done}/{self.total}  {pct:3.0f}%  elapsed {_fmt(elapsed)}  eta {_fmt(eta)}  {note}".rstrip(),
            file=self.stream,
            flush=True,
        )


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
