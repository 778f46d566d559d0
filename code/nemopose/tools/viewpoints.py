"""Viewpoint distribution of a prepared split (METHOD.md §16; the original's cal_vp_distribution).

    python -m nemopose.tools.viewpoints --dataroot data --split train --categories car bus

Writes per category a CSV of (azimuth, elevation, theta, distance) in degrees / units and a
PNG with their histograms, and prints a short summary.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from .. import constants
from ..cli import add_categories_argument
from ..data import annotation, layout
from ..errors import DataNotFound
from ..utils import atomic_path


def viewpoints(dataroot: str | Path, split: str, category: str, occ_level: str = "") -> np.ndarray:
    """(N, 4) azimuth, elevation, theta (degrees) and distance of a split's annotations."""
    lay = layout.split_layout(dataroot, split, category, occ_level)
    rows = []
    for path in sorted(lay.annotations.glob("*.npz")):
        pose = annotation.pose(annotation.load(path))
        rows.append([np.degrees(pose["azimuth"]) % 360, np.degrees(pose["elevation"]), np.degrees(pose["theta"]),
                     pose["distance"]])
    if not rows:
        raise DataNotFound(f"no annotations in {lay.annotations}; run PrepareData.sh first")
    return np.asarray(rows)


def plot_histograms(path: Path, values: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    for ax, col, name, bins in zip(axes, values.T, ("azimuth (deg)", "elevation (deg)", "theta (deg)", "distance"),
                                   (np.arange(0, 361, 15), 24, 24, 24)):
        ax.hist(col, bins=bins, color="tab:blue")
        ax.set_xlabel(name)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Viewpoint statistics of a prepared NeMo split.")
    p.add_argument("--dataroot", default="data", help="prepared data folder (default data)")
    p.add_argument("--split", default="train", choices=("train", "val"), help="default train")
    p.add_argument("--occ-level", default="", help="occluded val level (default none)")
    add_categories_argument(p, "every prepared category")
    p.add_argument("--out", default=None, help="output folder (default <dataroot>/viewpoints)")
    args = p.parse_args(argv)
    out = Path(args.out or Path(args.dataroot) / "viewpoints")
    out.mkdir(parents=True, exist_ok=True)
    info = layout.load_dataset_info(layout.split_root(args.dataroot, args.split, args.occ_level))
    tag = " (SYNTHETIC)" if info.synthetic else ""
    print(f"{'category':<12}{'n':>6}{'azim. bins used':>17}{'elev. median':>14}{'|theta| median':>16}{'dist. median':>14}")
    every = constants.wants_all(args.categories)
    for cat in constants.parse_categories(args.categories):
        try:
            v = viewpoints(args.dataroot, args.split, cat, args.occ_level)
        except DataNotFound:
            if every:          # "all": the prepared ones
                continue
            raise
        name = f"{cat}{args.occ_level}_{args.split}"
        with atomic_path(out / f"{name}.csv") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["azimuth_deg", "elevation_deg", "theta_deg", "distance"])
            writer.writerows(np.round(v, 4).tolist())
        plot_histograms(out / f"{name}.png", v, f"{cat} {args.split}{tag}: {len(v)} images")
        bins = len(np.unique((v[:, 0] // 45).astype(int)))
        print(f"{cat:<12}{len(v):>6}{bins:>14}/8{np.median(v[:, 1]):>14.1f}{np.median(np.abs(v[:, 2])):>16.1f}"
              f"{np.median(v[:, 3]):>14.2f}")
    return 0


if __name__ == "__main__":
    from ..cli import run

    raise SystemExit(run(main))
