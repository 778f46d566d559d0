"""Shared helpers for the benchmark scripts: timing and table printing."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Callable

import torch


REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The shared fixtures folder (real meshes, golden outputs) when it can be found:
    $NEMOPOSE_SHARED_DATA, else ../shared/data beside the checkout, else /work/shared/data."""
    candidates = [os.environ.get("NEMOPOSE_SHARED_DATA"), REPO.parent / "shared" / "data",
                  "/work/shared/data"]
    for cand in candidates:
        if cand and (Path(cand) / "real").is_dir():
            return Path(cand)
    return None


def car_cuboid():
    """The car cuboid: the released file when the fixtures are present, else the identical
    mesh generated from its extents (the cuboid generator reproduces it exactly)."""
    from nemopose import mesh

    shared = shared_data_dir()
    if shared is not None:
        return mesh.load_off(shared / "real" / "CAD_single" / "car" / "01.off")
    verts, faces = mesh.cuboid_mesh((-0.18409000337123871, 0.18409000337123871),
                                    (-0.44080001115798950, 0.43362998962402344),
                                    (-0.16811999678611755, 0.12016001343727112))
    return verts.astype("float32"), faces


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
