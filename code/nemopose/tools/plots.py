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


def _plot(path: str | os.PathLike, curves: Mapping[str, np.ndarray], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = np.linspace(0.0, MAX_DEG, 181)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for label, errors in curves.items():
        ax.plot(thresholds, accuracy_curve(errors, thresholds), label=f"{label} ({len(errors)})")
    for deg, name in ((10.0, "pi/18"), (30.0, "pi/6")):
        ax.axvline(deg, color="grey", ls="--", lw=1)
        ax.text(deg + 0.8, 2, name, color="grey")
    ax.set_xlim(0, MAX_DEG)
    ax.set_ylim(0, 100)
    ax.set_xlabel("rotation error threshold (degrees)")
    ax.set_ylabel("images under the threshold (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", ncol=2 if len(curves) > 6 else 1)
    fig.tight_layout()
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
