"""Accuracy pictures (PNG): the fraction of images whose rotation error is under each
threshold from 0 to 90 degrees, with pi/18 (10 deg) and pi/6 (30 deg) marked, so the two
accuracies of the table are read off the curves at the dashed lines.

- :func:`plot_categories`: one curve per category of one occlusion level
  (``accuracy_<level>.png``, written by the inference);
- :func:`plot_levels`: one curve per occlusion level, all categories pooled
  (``summary.png``, written by ``python -m nemopose.evaluate``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from .. import constants
from ..utils import atomic_path

MAX_DEG = 90.0


def accuracy_curve(errors_deg: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Percentage of ``errors_deg`` strictly below each threshold (as ACC@theta)."""
    err = np.sort(np.asarray(errors_deg, dtype=np.float64))
    if err.size == 0:
        return np.full(len(thresholds), np.nan)
    return 100.0 * np.searchsorted(err, thresholds, side="left") / err.size


# Curves that reach 100 % run together along the top: the axis goes a little above 100 so
# that they are not drawn on the frame, and each curve has its own dash pattern and a width
# that shrinks from the first to the last, so the ones under it still show through.
Y_TOP = 104.0
LINE_STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)))


def accuracy_figure(curves: Mapping[str, np.ndarray], title: str):
    """The matplotlib figure of :func:`_plot` (one curve per entry of ``curves``: errors in
    degrees), for saving or inspecting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = np.linspace(0.0, MAX_DEG, 181)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    n = len(curves)
    for i, (label, errors) in enumerate(curves.items()):
        ax.plot(thresholds, accuracy_curve(errors, thresholds), label=f"{label} ({len(errors)})",
                ls=LINE_STYLES[i % len(LINE_STYLES)], lw=3.0 - 1.8 * i / max(n - 1, 1), color=f"C{i % 10}")
    for deg, name in ((10.0, "pi/18"), (30.0, "pi/6")):
        ax.axvline(deg, color="grey", ls="--", lw=1)
        ax.text(deg + 0.8, 2, name, color="grey")
    ax.axhline(100.0, color="grey", lw=0.5, alpha=0.5)
    ax.set_xlim(0, MAX_DEG)
    ax.set_ylim(0, Y_TOP)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("rotation error threshold (degrees)")
    ax.set_ylabel("images under the threshold (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", ncol=2 if len(curves) > 6 else 1)
    fig.tight_layout()
    return fig


def _plot(path: str | os.PathLike, curves: Mapping[str, np.ndarray], title: str) -> Path:
    import matplotlib.pyplot as plt

    fig = accuracy_figure(curves, title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def plot_categories(path: str | os.PathLike, errors_by_category: Mapping[str, np.ndarray], title: str) -> Path:
    """One curve per category (short names), errors in degrees."""
    return _plot(path, {constants.SHORT_NAMES.get(c, c): np.asarray(e) for c, e in errors_by_category.items()},
                 title)


def plot_levels(path: str | os.PathLike, errors_by_level: Mapping[str, np.ndarray], title: str) -> Path:
    """One curve per occlusion level (all categories pooled), errors in degrees."""
    return _plot(path, {level or "L0": np.asarray(e) for level, e in errors_by_level.items()}, title)
