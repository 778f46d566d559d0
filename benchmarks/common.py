"""Shared helpers for the benchmark scripts: timing and table printing."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Callable

import torch


REPO = Path(__file__).resolve().parents[1]


FIXTURES = REPO / "tests" / "fixtures"


def car_cuboid():
    """The car cuboid released by the authors (tests/fixtures/real)."""
    from nemopose import mesh

    return mesh.load_off(FIXTURES / "real" / "CAD_single" / "car" / "01.off")


def malloc_tuned() -> bool:
    """True when glibc malloc keeps large blocks (see code/env.sh); page faults otherwise
    dominate large-tensor work on CPU."""
    return "MALLOC_MMAP_THRESHOLD_" in os.environ


def time_call(fn: Callable[[], object], repeats: int = 5, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_table(title: str, header: list[str], rows: list[list[object]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    lines = [title, "  ".join(str(h).rjust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def environment_line() -> str:
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"malloc tuning {'on' if malloc_tuned() else 'off'}")
