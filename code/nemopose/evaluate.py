"""Accuracy of predicted poses (SPEC section 12): rotation errors and the paper's table.

Per category: ``ACC@pi/6 = 100 * mean(err < pi/6)``, ``ACC@pi/18 = 100 * mean(err < pi/18)``
and ``MedErr = median(err)`` in degrees. The ``Mean`` column is the original's: the
image-count-weighted mean of the per-category values (for MedErr a weighted mean of
medians); the pooled median over all images is reported beside it, labelled.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from . import constants, geometry
from .utils import atomic_path, atomic_write_json

THRESHOLDS = {"Pi/6": math.pi / 6, "Pi/18": math.pi / 18}


def rotation_errors(pred: Mapping[str, Sequence[float]], gt: Mapping[str, Sequence[float]]) -> np.ndarray:
    """Geodesic rotation errors (radians) between predicted and annotated poses.

    Args:
        pred, gt: mappings with arrays ``azimuth``, ``elevation``, ``theta`` (radians), (N,).
    Returns:
        (N,) errors; NaN or inf in a pose gives pi/2 (the original's convention).
    """
    return np.asarray(geometry.pose_error(pred, gt), dtype=np.float64).reshape(-1)


@dataclass(frozen=True)
class Metrics:
    """Accuracy of one set of images: count, ACC@pi/6 and ACC@pi/18 in percent, median
    error in degrees."""

    n: int
    acc_pi6: float
    acc_pi18: float
    med_err: float


def metrics(errors: Iterable[float]) -> Metrics:
    """:class:`Metrics` of rotation errors in radians."""
    err = np.asarray(list(errors) if not isinstance(errors, np.ndarray) else errors, dtype=np.float64)
    if err.size == 0:
        return Metrics(0, float("nan"), float("nan"), float("nan"))
    return Metrics(n=int(err.size), acc_pi6=100.0 * float(np.mean(err < THRESHOLDS["Pi/6"])),
                   acc_pi18=100.0 * float(np.mean(err < THRESHOLDS["Pi/18"])),
                   med_err=float(np.degrees(np.median(err))))


@dataclass(frozen=True)
class AccuracyTable:
    """Per-category metrics plus the original's weighted mean and the pooled median."""

    per_category: dict[str, Metrics]
    mean: Metrics                 # image-count-weighted means of the per-category values
    pooled_median: float          # median error (degrees) over all images of all categories

    def as_dict(self) -> dict:
        return {"per_category": {k: asdict(v) for k, v in self.per_category.items()},
                "mean": asdict(self.mean), "pooled_median": self.pooled_median}


def accuracy_table(errors_by_category: Mapping[str, Iterable[float]]) -> AccuracyTable:
    """Build the table from per-category rotation errors (radians); categories are put in
    the canonical order and empty ones are left out."""
    order = [c for c in constants.CATEGORIES if c in errors_by_category] + \
        [c for c in errors_by_category if c not in constants.CATEGORIES]
    per_cat = {c: metrics(np.asarray(list(errors_by_category[c]), dtype=np.float64)) for c in order}
    per_cat = {c: m for c, m in per_cat.items() if m.n > 0}
    total = sum(m.n for m in per_cat.values())
    if total == 0:
        nan = float("nan")
        return AccuracyTable({}, Metrics(0, nan, nan, nan), nan)

    def weighted(field: str) -> float:
        return sum(getattr(m, field) * m.n for m in per_cat.values()) / total

    pooled = np.concatenate([np.asarray(list(errors_by_category[c]), dtype=np.float64) for c in per_cat])
    return AccuracyTable(per_cat, Metrics(total, weighted("acc_pi6"), weighted("acc_pi18"), weighted("med_err")),
                         float(np.degrees(np.median(pooled))))


def format_table(table: AccuracyTable, title: str = "") -> str:
    """The paper's layout: rows Pi/6, Pi/18, MedErr; columns the categories' short names,
    then Mean (weighted, as the original) and the pooled median."""
    cols = [constants.SHORT_NAMES.get(c, c) for c in table.per_category] + ["Mean"]
    rows = [("Pi/6", "acc_pi6", "{:.1f}"), ("Pi/18", "acc_pi18", "{:.1f}"), ("MedErr", "med_err", "{:.1f}")]
    cells = [[fmt.format(getattr(m, field)) for m in list(table.per_category.values()) + [table.mean]]
             for _, field, fmt in rows]
    counts = [str(m.n) for m in table.per_category.values()] + [str(table.mean.n)]
    width = max([6] + [len(c) for c in cols] + [len(x) for r in cells for x in r])
    lines = [title] if title else []
    lines.append("".ljust(8) + "".join(c.rjust(width + 1) for c in cols))
    for (name, _, _), row in zip(rows, cells):
        lines.append(name.ljust(8) + "".join(x.rjust(width + 1) for x in row))
    lines.append("#images".ljust(8) + "".join(x.rjust(width + 1) for x in counts))
    lines.append(f"(Mean = image-weighted mean of the per-category values, as the original; "
                 f"pooled median error over all images: {table.pooled_median:.1f} deg)")
    return "\n".join(lines)


def format_summary(tables: Mapping[str, AccuracyTable], title: str = "") -> str:
    """One row per occlusion level with the weighted means: a combined view of several tables."""
    lines = [title] if title else []
    lines.append(f"{'level':<12}{'#images':>9}{'Pi/6':>8}{'Pi/18':>8}{'MedErr':>8}{'pooled med':>12}")
    for level, t in tables.items():
        lines.append(f"{level or 'L0':<12}{t.mean.n:>9d}{t.mean.acc_pi6:>8.1f}{t.mean.acc_pi18:>8.1f}"
                     f"{t.mean.med_err:>8.1f}{t.pooled_median:>12.1f}")
    return "\n".join(lines)


PREDICTION_FIELDS = ("category", "occ_level", "name", "mesh", "azimuth", "elevation", "theta", "distance",
                     "loss", "gt_azimuth", "gt_elevation", "gt_theta", "gt_distance", "error_deg")


def save_predictions_csv(path: str | os.PathLike, rows: Iterable[Mapping]) -> None:
    """Per-image predictions and errors as CSV (atomic)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(PREDICTION_FIELDS), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})


def load_predictions_csv(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key in PREDICTION_FIELDS[4:]:
            if key in row and row[key] != "":
                row[key] = float(row[key])
    return rows


def save_table_json(path: str | os.PathLike, table: AccuracyTable, **extra) -> None:
    atomic_write_json(path, {**extra, **table.as_dict()})


def errors_from_rows(rows: Iterable[Mapping]) -> dict[str, np.ndarray]:
    """Per-category error arrays (radians) from prediction rows with ``error_deg``."""
    out: dict[str, list[float]] = {}
    for row in rows:
        out.setdefault(row["category"], []).append(math.radians(float(row["error_deg"])))
    return {k: np.asarray(v) for k, v in out.items()}


def read_table_json(path: str | os.PathLike) -> dict:
    import json

    return json.loads(Path(path).read_text())


# ----------------------------------------------------------------------------- CLI


def summarize(exproot: str | os.PathLike, mesh_d: str = "single", levels: Sequence[str] | None = None) -> str:
    """Tables of every evaluated occlusion level under ``<exproot>/Accuracy_<mesh_d>/`` and
    a one-line-per-level summary; written to ``summary.txt`` / ``summary.json`` there."""
    folder = Path(exproot) / f"Accuracy_{mesh_d}"
    levels = list(levels) if levels else ["L0"] + list(constants.OCCLUSION_LEVELS)
    tables: dict[str, AccuracyTable] = {}
    synthetic = False
    for level in levels:
        csv_path = folder / f"predictions_{level}.csv"
        if not csv_path.is_file():
            continue
        tables[level] = accuracy_table(errors_from_rows(load_predictions_csv(csv_path)))
        meta = folder / f"accuracy_{level}.json"
        if meta.is_file():
            synthetic = synthetic or bool(read_table_json(meta).get("synthetic", False))
    if not tables:
        raise FileNotFoundError(f"no predictions_<level>.csv in {folder}; run InferenceNeMo.sh first")
    tag = "SYNTHETIC data (generated, not PASCAL3D+)" if synthetic else "PASCAL3D+"
    parts = [format_table(t, f"NeMo ({mesh_d} cuboid), occlusion {level}, {tag}") for level, t in tables.items()]
    text = "\n\n".join(parts + [format_summary(tables, f"NeMo ({mesh_d} cuboid), all levels, {tag}")])
    from .utils import atomic_write_text

    atomic_write_text(folder / "summary.txt", text + "\n")
    atomic_write_json(folder / "summary.json", {"synthetic": synthetic, "mesh_d": mesh_d,
                                               "levels": {k: v.as_dict() for k, v in tables.items()}})
    return text


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Print the accuracy tables of every evaluated occlusion level.")
    parser.add_argument("--exproot", default="exp", help="experiment folder (default exp)")
    parser.add_argument("--mesh-d", default="single", choices=constants.MESH_DIMENSIONS,
                        help="cuboid type (default single)")
    parser.add_argument("--levels", nargs="*", default=None, help="levels to include (default: all found)")
    args = parser.parse_args(argv)
    print(summarize(args.exproot, args.mesh_d, args.levels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
