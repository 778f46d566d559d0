"""NeMo's dataset preparation (METHOD.md §6): crops, annotations, lists, cuboids, 3D annotations.

Entry point of ``PrepareData.sh``::

    python -m nemopose.data.prepare --dataroot data [--categories "car bus"] \\
        [--mesh-dimensions "single multi"] [--no-occluded] [--synthetic auto|yes|no] \\
        [--synthetic-size tiny|demo] [--image-scale auto|1|0.5] [--overwrite] [--seed 0]

Which source: the real PASCAL3D+ release at ``<dataroot>/PASCAL3D+_release1.1`` (downloaded
when missing with ``--synthetic no``), or the synthetic PASCAL3D+ (:mod:`.synthetic`) that
``--synthetic auto`` builds when no real one is there. Then the stages of :mod:`.stages` per
category (one log line each): cuboid meshes (``CAD_single``, ``CAD_multi``), 2D crops +
annotations + lists for train, val and the occluded val levels, 3D annotations + lists3D
for train and val, links of the val 3D annotations into the occluded sets.

Idempotent: every output image is skipped when it exists, and each finished
(stage, split, category) writes a done-marker last (:func:`.layout.write_done`), so a rerun
only does what is missing; ``--overwrite`` redoes everything of the requested categories.
Bad inputs (undecodable image, ``.mat`` with missing fields, zero distance, unreadable
CAD model, ...) are reported with the file and the reason and skipped; the run goes on
and ends with a summary table (also written to ``<dataroot>/prepare_summary.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch

from .. import constants
from ..cli import add_categories_argument, add_yes_no_argument, run as run_cli
from ..fetch.download import DOWNLOAD_MODES, DownloadError
from ..errors import NemoPoseError
from ..utils import atomic_write_json, setup_logging
from . import annotate3d, layout, synthetic
from ..fetch import sources
from .crop import CROP_CENTERS
from .pascal3d import OccludedRelease, Pascal3DRelease
from .stages import (SUMMARY_FILE, PrepareConfig, Report, annotate_split, build_cuboids, link_occluded,
    prepare_split, remove_prepared)

log = logging.getLogger(__name__)


class SourceError(NemoPoseError, RuntimeError):
    """The data root cannot be used as asked (real vs synthetic, another scale, ...)."""


# ----------------------------------------------------------------------------- the whole run


def resolve_source(dataroot: Path, synthetic_mode: str) -> bool:
    """Whether to use the synthetic PASCAL3D+: ``auto`` uses a real (unmarked) release when
    one is at the data root, else the synthetic one; ``yes`` refuses to touch a real one;
    ``no`` requires a real one.

    Raises:
        SourceError with the reason when the request cannot be met.
    """
    release = layout.release_root(dataroot)
    real = release.is_dir() and not layout.is_synthetic(release)
    if synthetic_mode == "auto":
        return not real
    if synthetic_mode == "yes":
        if real:
            raise SourceError(f"SYNTHETIC=yes but a real PASCAL3D+ is at {release} (no {layout.SYNTHETIC_MARKER}); "
                               "refusing to mix synthetic data into it. Use another DATAROOT.")
        return True
    if synthetic_mode == "no":
        if not release.is_dir():
            raise SourceError(f"SYNTHETIC=no but no PASCAL3D+ at {release}; download PASCAL3D+ release 1.1 "
                               "there (ftp://cs.stanford.edu/cs/cvgl/PASCAL3D+_release1.1.zip)")
        if not real:
            raise SourceError(f"SYNTHETIC=no but {release} is the synthetic dataset ({layout.SYNTHETIC_MARKER})")
        return False
    raise SourceError(f"synthetic must be auto, yes or no; got {synthetic_mode!r}")


def fetch_sources(dataroot: Path, synthetic_mode: str, levels: list[str], download: str = "auto",
                  mirror: str | None = None, keep_archives: bool = False, progress: bool = True) -> None:
    """Download what the preparation needs (:func:`nemopose.fetch.sources.fetch_datasets`).

    ``SYNTHETIC=no``: every missing archive (the release, Image_subsets, the occluded
    levels); failures are errors (with ``download="no"``: one error listing what is missing
    and where to get it). ``auto`` with a real release present: the missing Image_subsets
    and occluded levels, and a failure only skips them (warning). Otherwise nothing.
    """
    release = layout.release_root(dataroot)
    real = release.is_dir() and not layout.is_synthetic(release)
    if synthetic_mode == "no":
        sources.fetch_datasets(dataroot, levels, mirror=mirror, download=download, keep_archives=keep_archives,
                               progress=progress)
    elif synthetic_mode == "auto" and real and sources.missing_archives(dataroot, levels):
        try:
            sources.fetch_datasets(dataroot, levels, mirror=mirror, download=download, keep_archives=keep_archives,
                                   progress=progress)
        except DownloadError as exc:
            log.warning("continuing without the missing archives: %s", str(exc).replace("\n", " "))


def _check_dataset_info(dataroot: Path, info: layout.DatasetInfo, overwrite: bool) -> None:
    """Refuse to add to prepared folders made from another source or scale."""
    for split_dir in layout.SPLIT_DIRS.values():
        path = dataroot / split_dir / layout.DATASET_INFO
        if not path.is_file():
            continue
        old = layout.load_dataset_info(path.parent)
        same = (old.synthetic == info.synthetic and old.image_scale == info.image_scale
                and old.extra.get("synthetic_config") == info.extra.get("synthetic_config"))
        if not same and not overwrite:
            raise SourceError(
                f"{path} was made from another source or scale (synthetic={old.synthetic}, "
                f"image_scale={old.image_scale}, {old.source}); now synthetic={info.synthetic}, "
                f"image_scale={info.image_scale}. Use OVERWRITE=yes or another DATAROOT.")


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch intra-op threads (0: unchanged), then restore."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(dataroot: str | Path, categories: list[str], config: PrepareConfig | None = None) -> Report:
    """Everything ``PrepareData.sh`` does, for the given categories, with the settings of
    ``config`` (:class:`PrepareConfig`: meshes, occluded sets, data source, downloads).

    Returns:
        the :class:`Report` (also written to ``<dataroot>/prepare_summary.json``).
    """
    config = config or PrepareConfig()
    dataroot = Path(dataroot)
    levels = list(constants.OCCLUSION_LEVELS) if config.occluded else []
    fetch_sources(dataroot, config.synthetic, levels, config.download, config.download_mirror, config.keep_archives,
                  config.progress)
    with torch_threads(config.threads):
        return _run(dataroot, categories, config)


def _run(dataroot: Path, categories: list[str], config: PrepareConfig) -> Report:
    start = time.time()
    use_synthetic = resolve_source(dataroot, config.synthetic)
    scale = config.image_scale if config.image_scale is not None else (0.5 if use_synthetic else 1.0)
    config = replace(config, image_scale=scale)
    mesh_dims, occluded, synthetic_size, seed = list(config.mesh_dims), config.occluded, config.synthetic_size, config.seed
    release = Pascal3DRelease(layout.release_root(dataroot))
    synthetic_config = None
    if use_synthetic:
        banner = "#" * 88
        for line in (banner, f"# No real PASCAL3D+ at {release.root}: building the SYNTHETIC PASCAL3D+ "
                     f"(size {synthetic_size}, seed {seed}).",
                     "# Everything prepared from it is marked synthetic; its results are NOT PASCAL3D+ results.",
                     "# For the real data run SYNTHETIC=no ./PrepareData.sh: it downloads PASCAL3D+ release 1.1",
                     "# (Stanford CVGL, several GB), NeMo's Image_subsets and the three OccludedPASCAL3D+ levels",
                     "# (Google Drive), or reads them from DOWNLOAD_MIRROR; see README 'Running on PASCAL3D+'.",
                     banner):
            log.warning(line)
        syn = replace(synthetic.preset(synthetic_size, seed), occluded=occluded)
        synthetic.generate(dataroot, categories, syn, overwrite=config.overwrite, progress=config.progress)
        synthetic_config = syn.marker()
    else:
        log.info("using the real PASCAL3D+ at %s", release.root)
    occ_release = OccludedRelease(layout.occluded_root(dataroot))
    levels = list(constants.OCCLUSION_LEVELS) if occluded else []
    if occluded and not occ_release.root.is_dir():
        log.warning("no OccludedPASCAL3D at %s: the occluded sets are skipped", occ_release.root)
        levels = []
    info = layout.DatasetInfo(
        synthetic=use_synthetic, image_scale=scale,
        source=("synthetic PASCAL3D+ (nemopose.data.synthetic)" if use_synthetic else "PASCAL3D+ release 1.1")
        + f" at {release.root}",
        extra={"synthetic_config": synthetic_config, "crop_center": config.crop_center,
               "kp_weights": config.annotate.weights, "keep_zero_distance": config.keep_zero_distance})
    _check_dataset_info(dataroot, info, config.overwrite)
    for split_dir in layout.SPLIT_DIRS.values():
        folder = dataroot / split_dir
        if (split_dir != layout.SPLIT_DIRS["occ"] or levels) and (
                not (folder / layout.DATASET_INFO).is_file() or layout.load_dataset_info(folder) != info):
            layout.save_dataset_info(folder, info)

    report = Report()
    for category in categories:
        t0 = time.time()
        if config.overwrite:
            remove_prepared(dataroot, category, levels, mesh_dims)
        build_cuboids(dataroot, release, category, mesh_dims, config, report)
        sizes = {split: prepare_split(dataroot, release, category, split, "", config, report)
                 for split in ("train", "val")}
        for level in levels:
            sizes[level] = prepare_split(dataroot, release, category, "val", level, config, report, occ_release)
        log.info("%s: 2D crops train %d, val %d%s (%.1f s)", category, sizes["train"], sizes["val"],
                 "".join(f", {lv} {sizes[lv]}" for lv in levels), time.time() - t0)
        t1 = time.time()
        for mesh_d in mesh_dims:
            n3 = {split: annotate_split(dataroot, category, split, mesh_d, config, report)
                  for split in ("train", "val")}
            for level in levels:
                n3[level] = link_occluded(dataroot, category, level, mesh_d, config, report)
            log.info("%s: 3D annotations (%s) %s (%.1f s)", category, mesh_d,
                     ", ".join(f"{k} {v}" for k, v in n3.items()), time.time() - t1)
            t1 = time.time()
    columns = ["train", "val"] + levels + [f"{s} 3D {m}" for m in mesh_dims for s in ("train", "val")]
    summary = report.table(categories, columns)
    log.info("summary (images per category and split%s):\n%s",
             "; SYNTHETIC data" if use_synthetic else "", summary)
    atomic_write_json(dataroot / SUMMARY_FILE, {
        "synthetic": use_synthetic, "image_scale": scale, "categories": categories, "mesh_dimensions": mesh_dims,
        "occlusion_levels": levels, "seconds": round(time.time() - start, 1), **report.to_json()})
    log.info("done in %.1f s; summary written to %s", time.time() - start, dataroot / SUMMARY_FILE)
    return report


# ----------------------------------------------------------------------------- CLI


def _synthetic_mode(value: str) -> str:
    v = value.strip().lower()
    v = {"true": "yes", "false": "no"}.get(v, v)      # the original scripts' true/false
    if v not in ("auto", "yes", "no"):
        raise argparse.ArgumentTypeError(f"must be auto, yes or no, got {value!r}")
    return v


def _image_scale(value: str) -> float | None:
    if value == "auto":
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be auto or a number, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The command line; defaults and their help come from :class:`PrepareConfig`."""
    d = PrepareConfig()
    parser = argparse.ArgumentParser(
        description="Prepare NeMo's PASCAL3D+ datasets (METHOD.md §6): crops, annotations, cuboids, 3D annotations. "
                    "Builds the synthetic PASCAL3D+ when the real one is absent.")
    parser.add_argument("--dataroot", default="data", help="data root (default: data)")
    add_categories_argument(parser, "all 12")
    parser.add_argument("--mesh-dimensions", default=" ".join(d.mesh_dims),
                        help=f"cuboid meshes to build and annotate (default: '{' '.join(d.mesh_dims)}')")
    add_yes_no_argument(parser, "--occluded", dest="occluded", default=d.occluded, help="make the occluded val sets")
    parser.add_argument("--no-occluded", dest="occluded", action="store_false", help="same as --occluded no")
    parser.add_argument("--synthetic", default=d.synthetic, type=_synthetic_mode, metavar="auto|yes|no",
                        help=f"auto: real PASCAL3D+ when present (unmarked), else synthetic (default: {d.synthetic})")
    parser.add_argument("--synthetic-size", default=d.synthetic_size, choices=sorted(synthetic.PRESETS),
                        help=f"size of the synthetic dataset (default: {d.synthetic_size})")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"seed of the synthetic dataset (default: {d.seed})")
    parser.add_argument("--image-scale", default=d.image_scale, type=_image_scale, metavar="auto|SCALE",
                        help="crop scale: auto = 1 for real data, 0.5 for synthetic (default: auto)")
    add_yes_no_argument(parser, "--overwrite", dest="overwrite", default=d.overwrite, help="redo finished work")
    parser.add_argument("--crop-center", default=d.crop_center, choices=CROP_CENTERS,
                        help=f"crop window centre: principal (NeMo) or bbox (later pipeline) (default: {d.crop_center})")
    parser.add_argument("--kp-weights", default=d.annotate.weights, choices=annotate3d.WEIGHT_MODES,
                        help="3D kp_weights: original (sphere-fit directions, as NeMo) or normal (outward normals) "
                             f"(default: {d.annotate.weights})")
    parser.add_argument("--keep-zero-distance", action="store_true",
                        help="keep records with distance 0 as the original does (default: report and skip)")
    parser.add_argument("--azimuth-bins", default=d.azimuth_bins,
                        help="also write unseen-pose lists3D for this azimuth mask, e.g. TFFTTFFT (default: none)")
    parser.add_argument("--download", default=d.download, choices=DOWNLOAD_MODES,
                        help="auto: download missing archives (with --synthetic no, or missing optional ones next to a "
                             f"real release); no: never, list what is missing (default: {d.download})")
    parser.add_argument("--download-mirror", default=d.download_mirror,
                        help="base URL or folder holding the archives under their names; then the only source "
                             "(default: the authors' sources)")
    add_yes_no_argument(parser, "--keep-archives", dest="keep_archives", default=d.keep_archives,
                        help="keep archives after unpacking")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars (default: show)")
    parser.add_argument("--threads", type=int, default=d.threads,
                        help=f"torch threads while preparing; 0 = torch's default (default: {d.threads}, fastest here)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    mesh_dims = tuple(constants.check_mesh_d(m) for m in args.mesh_dimensions.replace(",", " ").split())
    config = PrepareConfig(
        mesh_dims=mesh_dims, occluded=args.occluded, synthetic=args.synthetic, synthetic_size=args.synthetic_size,
        seed=args.seed, image_scale=args.image_scale, crop_center=args.crop_center,
        keep_zero_distance=args.keep_zero_distance, overwrite=args.overwrite,
        annotate=annotate3d.Annotate3DConfig(weights=args.kp_weights), azimuth_bins=args.azimuth_bins,
        progress=not args.no_progress, threads=args.threads, download=args.download,
        download_mirror=args.download_mirror or None, keep_archives=args.keep_archives)
    run(args.dataroot, constants.parse_categories(args.categories), config)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
