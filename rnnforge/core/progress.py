"""Where a long step is: ``TensorFlow's outputs: 512/1000 examples after 6 s, about 6 s left``.

A step that ends within ``every_s`` prints nothing; a longer one prints a line at most every
``every_s`` seconds, and one when it is done. The estimate assumes the remaining items cost what
the finished ones did on average.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def eta_text(elapsed_s: float, done: int, total: int) -> str:
    """``about 12 s left`` (or ``about 3 min left``) after ``done`` of ``total`` items in ``elapsed_s``."""
    if done <= 0:
        return "time left unknown"
    left = elapsed_s / done * max(0, total - done)
    return f"about {left:.0f} s left" if left < 120 else f"about {left / 60:.0f} min left"


class Progress:
    """``update(done)`` after each chunk of a step of ``total`` ``unit``; ``finish()`` at its end."""

    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "examples",
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        out: Callable[[str], None] | None = None,
    ):
        self.label, self.total, self.unit, self.every_s, self.clock = label, total, unit, every_s, clock
        self.out = out or (lambda line: print(line, flush=True))
        self.started = self.last = clock()
        self.shown = False

    def update(self, done: int) -> None:
        now = self.clock()
        if done < self.total and now - self.last >= self.every_s:
            elapsed = now - self.started
            self.out(
                f"  {self.label}: {done}/{self.total} {self.unit} after {elapsed:.0f} s, "
                f"{eta_text(elapsed, done, self.total)}"
            )
            self.last, self.shown = now, True

    def finish(self) -> None:
        if self.shown:
            self.out(f"  {self.label}: {self.total}/{self.total} {self.unit} in {self.clock() - self.started:.0f} s")
