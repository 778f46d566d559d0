"""Progress of long loops, readable both on a terminal and in a log file.

On a terminal, :func:`progress_bar` is a tqdm bar. Anywhere else (a log file, a pipe, a batch
job's output), a redrawn bar leaves carriage returns and, for bars that clear themselves,
blank lines; there it is replaced by :class:`LineProgress`, which prints whole lines:

    12:03:04 progress train car: 40% (320/800) 1 min 52 s, loss=0.4120

one when the loop has moved on by another 10 % (at most one line every ``MIN_GAP_S``
seconds, so a loop of a few seconds stays quiet), one after every ``EVERY_S`` seconds
without a line, and a last one at the end of a loop that printed before or that should stay
visible (``leave=True``). Every tool's progress goes through :func:`progress_bar`.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Iterable, Iterator, TextIO

EVERY_S = 30.0          # a line at least this often while a loop runs
STEPS = 10              # ... and one at every further 1/STEPS (10 %)
MIN_GAP_S = 3.0         # but 10 % steps no closer together than this


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):      # a closed or file-like stream without isatty
        return False


def progress_bar(iterable: Iterable | None = None, *, desc: str = "", total: float | None = None,
             leave: bool = True, disable: bool = False, unit: str = "it", unit_scale: bool = False,
             unit_divisor: int = 1000, file: TextIO | None = None, **tqdm_kwargs: Any):
    """A progress bar over ``iterable`` (or a manual one: ``update``, ``reset``), tqdm on a
    terminal and :class:`LineProgress` elsewhere. Arguments as tqdm's."""
    if is_terminal(file):
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=leave, disable=disable, unit=unit,
                    unit_scale=unit_scale, unit_divisor=unit_divisor, file=file, **tqdm_kwargs)
    return LineProgress(iterable, desc=desc, total=total, leave=leave, disable=disable, unit=unit,
                        unit_scale=unit_scale, unit_divisor=unit_divisor, file=file)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    return f"{minutes // 60} h {minutes % 60} min"


class LineProgress:
    """tqdm's interface as used here (iteration, ``update``, ``reset``, ``set_postfix``,
    ``close``, ``with``), printing whole lines (see the module docstring)."""

    def __init__(self, iterable: Iterable | None = None, *, desc: str = "", total: float | None = None,
                 leave: bool = True, disable: bool = False, unit: str = "it", unit_scale: bool = False,
                 unit_divisor: int = 1000, file: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)          # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total, self.desc, self.leave, self.disable = total, desc, leave, disable
        self.unit, self.unit_scale, self.unit_divisor = unit, unit_scale, unit_divisor
        self.file, self.clock = file, clock
        self.n = 0
        self.postfix = ""
        self.lines = 0                          # lines printed so far
        self.closed = False
        self._start = self._last = clock()
        self._next_step = 1                     # the next step to report: n >= total * step / STEPS

    # ------------------------------------------------------------------ tqdm's interface

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LineProgress without an iterable: use update()")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.disable:
            return
        now = self.clock()
        if now - self._last >= EVERY_S:
            self._print(now)
        elif self.total and self.n < self.total and self.n * STEPS >= self._next_step * self.total \
                and now - self._last >= MIN_GAP_S:
            self._print(now)

    def reset(self, total: float | None = None) -> None:
        self.n = 0
        if total is not None:
            self.total = total
        self._next_step = 1

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.disable and (self.leave or self.lines):
            self._print(self.clock(), final=True)

    # ------------------------------------------------------------------ the line

    def _amount(self, value: float) -> str:
        if not self.unit_scale:
            return f"{value:g}"
        from tqdm import tqdm

        return tqdm.format_sizeof(value, divisor=self.unit_divisor) + self.unit    # e.g. 1.20MB

    def _print(self, now: float, final: bool = False) -> None:
        if self.total:
            fraction = min(self.n / self.total, 1.0)
            done = f"{int(100 * fraction)}% ({self._amount(self.n)}/{self._amount(self.total)}{self._unit()})"
            while self._next_step * self.total <= self.n * STEPS:
                self._next_step += 1
        else:
            done = f"{self._amount(self.n)}{self._unit()}"
        label = f"{self.desc}: " if self.desc else ""
        timing = f"done in {_duration(now - self._start)}" if final else _duration(now - self._start)
        extra = f", {self.postfix}" if self.postfix else ""
        stream = sys.stderr if self.file is None else self.file
        print(f"{time.strftime('%H:%M:%S')} progress {label}{done} {timing}{extra}", file=stream, flush=True)
        self.lines += 1
        self._last = now

    def _unit(self) -> str:
        return "" if self.unit == "it" or self.unit_scale else f" {self.unit}"
