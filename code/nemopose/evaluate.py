"""Accuracy of predicted poses (METHOD.md §12): rotation errors and the paper's table.

Per category: ``ACC@pi/6 = 100 * mean(err < pi/6)``, ``ACC@pi/18 = 100 * mean(err < pi/18)``
and ``MedErr = median(err)``. The ``Mean`` column is the original's: the
image-count-weighted mean of the per-category values (for MedErr a weighted mean of
medians); the pooled median over all images is reported beside it, labelled.

Errors are in degrees from the moment they are computed (:func:`rotation_errors_deg`)
through the per-image CSV to the table. (The original's ``total_error`` npz, which its
CalAccuracy.py reads in radians, is written in radians by the inference.)
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from . import constants, geometry
from .errors import DataNotFound
from .utils import atomic_path, atomic_write_json, atomic_write_text

# pi/6 and pi/18 in degrees, converted as the errors are (np.degrees), so that
# ``deg < THRESHOLDS_DEG`` is exactly the original's ``rad < pi / 6`` (30 degrees is not under pi/6).
THRESHOLDS_DEG = {"Pi/6": float(np.degrees(np.pi / 6)), "Pi/18": float(np.degrees(np.pi / 18))}


def rotation_errors_deg(pred: Mapping[str, Sequence[float]], gt: Mapping[str, Sequence[float]]) -> np.ndarray:
    """Geodesic rotation errors in degrees between predicted and annotated poses.

    Args:
        pred, gt: mappings with arrays ``azimuth``, ``elevation``, ``theta`` (radians), (N,).
    Returns:
        (N,) errors in degrees; NaN or inf in a pose gives 90 (pi/2, the original's convention).
    """
    return np.degrees(np.asarray(geometry.pose_error(pred, gt), dtype=np.float64).reshape(-1))


@dataclass(frozen=True)
class Metrics:
    """Accuracy of one set of images: count, ACC@pi/6 and ACC@pi/18 in percent, median
    error in degrees."""

    n: int
    acc_pi6: float
    acc_pi18: float
    med_err: float


def metrics(errors_deg: Iterable[float]) -> Metrics:
    """:class:`Metrics` of rotation errors in degrees."""
    err = np.asarray(list(errors_deg) if not isinstance(errors_deg, np.ndarray) else errors_deg, dtype=np.float64)
    if err.size == 0:
        return Metrics(0, float("nan"), float("nan"), float("nan"))
    return Metrics(n=int(err.size), acc_pi6=100.0 * float(np.mean(err < THRESHOLDS_DEG["Pi/6"])),
                   acc_pi18=100.0 * float(np.mean(err < THRESHOLDS_DEG["Pi/18"])),
                   med_err=float(np.median(err)))


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
    """Build the table from per-category rotation errors (degrees); categories are put in
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
                         float(np.median(pooled)))


def format_table(table: AccuracyTable, title: str = "",
                 reference: Mapping[str, Mapping[str, float]] | None = None, reference_name: str = "paper") -> str:
    """The paper's layout: rows Pi/6, Pi/18, MedErr; columns the categories' short names,
    then Mean (weighted, as the original) and the pooled median.

    ``reference`` ({category or "Mean": {"acc_pi6", "acc_pi18", "med_err"}}, e.g.
    :func:`nemopose.constants.published_l0`) adds a row under each of ours, labelled
    ``reference_name``, with the reference's numbers for the same columns.
    """
    names = list(table.per_category) + ["Mean"]
    cols = [constants.SHORT_NAMES.get(c, c) for c in table.per_category] + ["Mean"]
    metrics_of = list(table.per_category.values()) + [table.mean]
    rows = [("Pi/6", "acc_pi6"), ("Pi/18", "acc_pi18"), ("MedErr", "med_err")]
    lines_of = []
    for label, field in rows:
        lines_of.append((label, [f"{getattr(m, field):.1f}" for m in metrics_of]))
        if reference is not None:
            lines_of.append((f" {reference_name}", [f"{reference[n][field]:.1f}" if n in reference else "-"
                                                    for n in names]))
    counts = [str(m.n) for m in metrics_of]
    width = max([6] + [len(c) for c in cols] + [len(x) for _, r in lines_of for x in r])
    label_width = max([8] + [len(label) + 1 for label, _ in lines_of])
    lines = [title] if title else []
    lines.append("".ljust(label_width) + "".join(c.rjust(width + 1) for c in cols))
    for label, row in lines_of:
        lines.append(label.ljust(label_width) + "".join(x.rjust(width + 1) for x in row))
    lines.append("#images".ljust(label_width) + "".join(x.rjust(width + 1) for x in counts))
    lines.append(f"(Mean = image-weighted mean of the per-category values, as the original; "
                 f"pooled median error over all images: {table.pooled_median:.1f} deg)")
    if reference is not None:
        lines.append(f"({reference_name}: the authors' reported numbers for their released models; "
                     "their Mean is over all 12 categories)")
    return "\n".join(lines)


def format_summary(tables: Mapping[str, AccuracyTable], title: str = "") -> str:
    """One row per occlusion level with the weighted means: a combined view of several tables."""
    lines = [title] if title else []
    lines.append(f"{'level':<12}{'#images':>9}{'Pi/6':>8}{'Pi/18':>8}{'MedErr':>8}{'pooled med':>12}")
    for level, t in tables.items():
        lines.append(f"{level or 'L0':<12}{t.mean.n:>9d}{t.mean.acc_pi6:>8.1f}{t.mean.acc_pi18:>8.1f}"
                     f"{t.mean.med_err:>8.1f}{t.pooled_median:>12.1f}")
    return "\n".join(lines)


@dataclass(frozen=True)
class PredictionRow:
    """One evaluated image: a row of ``predictions_<level>.csv``. Angles in radians (as
    PASCAL3D+); ``distance`` and ``gt_distance`` in PASCAL3D+ units, ``render_distance`` the
    pose solver's (:mod:`nemopose.geometry`, "distance units"); ``error_deg`` in degrees."""

    category: str
    occ_level: str
    name: str
    mesh: int
    azimuth: float
    elevation: float
    theta: float
    distance: float
    render_distance: float
    loss: float
    gt_azimuth: float
    gt_elevation: float
    gt_theta: float
    gt_distance: float
    error_deg: float


# Per-image CSV columns, in order: the fields of PredictionRow.
PREDICTION_FIELDS = tuple(f.name for f in fields(PredictionRow))


def save_predictions_csv(path: str | os.PathLike, rows: Iterable[PredictionRow | Mapping]) -> None:
    """Per-image predictions and errors as CSV (atomic)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(PREDICTION_FIELDS), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                values = asdict(row) if isinstance(row, PredictionRow) else row
                writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in values.items()})


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


def errors_from_rows(rows: Iterable[PredictionRow | Mapping]) -> dict[str, np.ndarray]:
    """Per-category error arrays (degrees) from prediction rows (typed, or read from a CSV)."""
    out: dict[str, list[float]] = {}
    for row in rows:
        if isinstance(row, PredictionRow):
            out.setdefault(row.category, []).append(row.error_deg)
        else:
            out.setdefault(row["category"], []).append(float(row["error_deg"]))
    return {k: np.asarray(v) for k, v in out.items()}


def read_table_json(path: str | os.PathLike) -> dict:
    import json

    return json.loads(Path(path).read_text())


# ----------------------------------------------------------------------------- CLI


def summarize(exproot: str | os.PathLike, mesh_d: str = "single", levels: Sequence[str] | None = None,
              azimuth_bins: str = "", summary_only: bool = False) -> str:
    """Tables of every evaluated occlusion level under ``<exproot>/Accuracy_<mesh_d>/`` and
    a one-line-per-level summary; written to ``summary.txt`` / ``summary.json`` /
    ``summary.png`` (accuracy against the error threshold, one curve per level) there.
    Returns all of it, or (``summary_only``) the one-line-per-level summary alone."""
    from .experiment import Experiment
    from .tools.plots import plot_levels

    exp = Experiment(exproot, mesh_d, azimuth_bins)
    levels = list(levels) if levels else ["L0"] + list(constants.OCCLUSION_LEVELS)
    tables: dict[str, AccuracyTable] = {}
    errors: dict[str, np.ndarray] = {}
    synthetic = False
    for level in levels:
        csv_path = exp.predictions_csv(level)
        if not csv_path.is_file():
            continue
        by_category = errors_from_rows(load_predictions_csv(csv_path))
        tables[level] = accuracy_table(by_category)
        errors[level] = np.concatenate(list(by_category.values())) if by_category else np.zeros(0)
        meta = exp.accuracy_file(level, "json")
        if meta.is_file():
            synthetic = synthetic or bool(read_table_json(meta).get("synthetic", False))
    if not tables:
        from .cli import next_steps

        infer = next_steps.driver_command("infer", exproot=exproot, mesh_d=mesh_d)
        raise DataNotFound(f"no predictions_<level>.csv in {exp.accuracy}; run {infer} first" +
                           next_steps.demo_hint(exproot, mesh_d, flags=True, with_dataroot=False))
    tag = "SYNTHETIC data (generated, not PASCAL3D+)" if synthetic else "PASCAL3D+"
    parts = [format_table(t, f"NeMo ({mesh_d} cuboid), occlusion {level}, {tag}") for level, t in tables.items()]
    summary = format_summary(tables, f"NeMo ({mesh_d} cuboid), all levels, {tag}")
    text = "\n\n".join(parts + [summary])
    atomic_write_text(exp.summary_file("txt"), text + "\n")
    atomic_write_json(exp.summary_file("json"), {"synthetic": synthetic, "mesh_d": mesh_d,
                                                 "levels": {k: v.as_dict() for k, v in tables.items()}})
    plot_levels(exp.summary_file("png"), errors, f"NeMo ({mesh_d} cuboid), {tag}")
    return summary if summary_only else text


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Print the accuracy tables of every evaluated occlusion level "
                                     "(and write summary.txt/json/png).")
    parser.add_argument("--exproot", default="exp", help="experiment folder (default exp)")
    parser.add_argument("--mesh-d", default="single", choices=constants.MESH_DIMENSIONS,
                        help="cuboid type (default single)")
    parser.add_argument("--azimuth-bins", default="", help="unseen-pose models of this mask (default: none)")
    parser.add_argument("--levels", nargs="*", default=None, help="levels to include (default: all found)")
    parser.add_argument("--summary-only", action="store_true",
                        help="print only the one-line-per-level summary, e.g. after InferenceNeMo.sh printed "
                             "each level's table (summary.txt still holds everything; default: print all)")
    args = parser.parse_args(argv)
    print(summarize(args.exproot, args.mesh_d, args.levels, args.azimuth_bins, args.summary_only))
    return 0


if __name__ == "__main__":
    from .cli import run

    raise SystemExit(run(main))
