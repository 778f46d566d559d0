"""NeMo's dataset preparation (SPEC 6): crops, annotations, lists, cuboids, 3D annotations.

Entry point of ``PrepareData.sh``::

    python -m nemopose.data.prepare --dataroot data [--categories "car bus"] \\
        [--mesh-dimensions "single multi"] [--no-occluded] [--synthetic auto|yes|no] \\
        [--synthetic-size tiny|demo] [--image-scale auto|1|0.5] [--overwrite] [--seed 0]

Stages per category (one log line each): cuboid meshes (``CAD_single``, ``CAD_multi``),
2D crops + annotations + lists for train, val and the occluded val levels, 3D annotations
+ lists3D for train and val, links of the val 3D annotations into the occluded sets.

Idempotent: every output image is skipped when it exists, and each finished
(stage, split, category) writes a done-marker last (``<split>/.done/``), so a rerun only
does what is missing; ``--overwrite`` redoes everything of the requested categories.
Bad inputs (undecodable image, ``.mat`` with missing fields, zero distance, unreadable
CAD model, ...) are reported with the file and the reason and skipped; the run goes on
and ends with a summary table (also written to ``<dataroot>/prepare_summary.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import shutil
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .. import constants, mesh
from ..utils import atomic_write_bytes, atomic_write_json, setup_logging
from . import annotate3d, layout, synthetic
from .crop import CROP_CENTERS, CropError, CropGeometry, apply_crop, crop_geometry, map_to_crop
from .pascal3d import (KEYPOINT_VISIBLE, ImageReadError, ObjectRecord, OccludedRelease, Pascal3DRelease,
                       RecordError, load_image, load_occluder_mask, load_record)

log = logging.getLogger(__name__)

JPEG_QUALITY = 75  # PIL's default, which the original's Image.save used
SUMMARY_FILE = "prepare_summary.json"
DONE_DIR = ".done"


class SkipImage(ValueError):
    """An input that is reported and skipped (the message names the file and the reason)."""


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class PrepareConfig:
    """Settings of the preparation (defaults = the original's behaviour).

    Attributes:
        image_scale: crops are ``layout.scaled_image_size(cat, image_scale)`` and r is
            multiplied by it (1 = faithful; the synthetic CPU demo uses 0.5).
        crop_center: ``principal`` (NeMo) or ``bbox`` (the authors' later pipeline).
        keep_zero_distance: the original keeps records with distance 0 (coarse-only
            viewpoints; r falls back to 224 / min(bbox h, w), the camera uses 0.1). By
            default they are reported and skipped.
        overwrite: redo existing outputs.
        annotate: settings of the 3D annotations.
        azimuth_bins: optional unseen-pose mask (e.g. ``TFFTTFFT``) for extra lists3D.
        jpeg_quality: of the saved crops.
        progress: show tqdm bars.
        threads: torch intra-op threads while preparing (its tensors are small: one thread
            is as fast on an idle machine and many times faster on a busy one, where
            OpenMP threads wait for each other; 0 keeps torch's setting).
    """

    image_scale: float = 1.0
    crop_center: str = "principal"
    keep_zero_distance: bool = False
    overwrite: bool = False
    annotate: annotate3d.Annotate3DConfig = field(default_factory=annotate3d.Annotate3DConfig)
    azimuth_bins: str | None = None
    jpeg_quality: int = JPEG_QUALITY
    progress: bool = True
    threads: int = 1

    def __post_init__(self) -> None:
        if not self.image_scale > 0:
            raise ValueError(f"image_scale must be > 0, got {self.image_scale}")
        if self.crop_center not in CROP_CENTERS:
            raise ValueError(f"crop_center must be one of {CROP_CENTERS}, got {self.crop_center!r}")
        if self.azimuth_bins is not None:
            annotate3d.azimuth_bin_filter(self.azimuth_bins)  # validates the mask


# ----------------------------------------------------------------------------- report


@dataclass
class Report:
    """Counts per (category, column) and the skipped files with their reasons."""

    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    skipped: list[dict[str, str]] = field(default_factory=list)

    def count(self, category: str, column: str, what: str, n: int = 1) -> None:
        self.counts[f"{category}/{column}"][what] += n

    def skip(self, category: str, column: str, path: Path | str, reason: str) -> None:
        """Record a skipped input; ``reason`` should name the file (errors of the readers do)."""
        self.count(category, column, "skipped")
        self.skipped.append({"category": category, "split": column, "file": str(path), "reason": reason})
        log.warning("skipped %s: %s", path, reason)

    def total(self, category: str, column: str, what: Iterable[str] = ("prepared", "existing")) -> int:
        return sum(self.counts[f"{category}/{column}"][w] for w in what)

    def table(self, categories: list[str], columns: list[str]) -> str:
        """Images per category and column (``n`` or ``n (-k skipped)``), and the skip reasons."""
        header = ["category"] + columns
        rows = []
        for cat in categories:
            row = [cat]
            for col in columns:
                c = self.counts.get(f"{cat}/{col}", Counter())
                n = c["prepared"] + c["existing"]
                row.append(f"{n}" + (f" (-{c['skipped']})" if c["skipped"] else ""))
            rows.append(row)
        widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
        lines = ["  ".join(str(h).rjust(w) for h, w in zip(header, widths)),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in rows]
        if self.skipped:
            reasons = Counter(_reason_kind(s["reason"]) for s in self.skipped)
            lines.append(f"skipped files: {len(self.skipped)} (" +
                         ", ".join(f"{k}: {v}" for k, v in reasons.most_common()) + ")")
            lines += [f"  {s['file']}: {s['reason']}" for s in self.skipped[:20]]
            if len(self.skipped) > 20:
                lines.append(f"  ... {len(self.skipped) - 20} more in {SUMMARY_FILE}")
        else:
            lines.append("skipped files: none")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"counts": {k: dict(v) for k, v in sorted(self.counts.items())}, "skipped": self.skipped}


def _reason_kind(reason: str) -> str:
    """A short class of a skip reason for the summary line."""
    for key in ("zero distance", "cannot decode image", "image file does not exist", "missing or malformed field",
                "cannot read .mat", "annotation file does not exist", ".off", "no cuboid", "outside",
                "occluder"):
        if key in reason:
            return key
    return "other"


# ----------------------------------------------------------------------------- one image


def annotation_2d(record: ObjectRecord, geometry: CropGeometry, occ_mask: np.ndarray | None) -> dict[str, Any]:
    """The annotation npz content of SPEC 13 for one cropped image.

    Keypoints go through the box-to-box map as (row, col); status 1 stays visible unless the
    occluder mask covers the keypoint's original pixel (then 0); other statuses are kept
    (0 or 2) with location (0, 0), as the original stores them.
    """
    status = record.keypoint_status.copy()
    kp = np.zeros((len(status), 2), dtype=np.float64)
    visible = status == KEYPOINT_VISIBLE
    if visible.any():
        xy = record.keypoint_xy[visible]
        kp[visible] = map_to_crop(xy[:, ::-1], geometry.box_ori, geometry.box_obj)
        if occ_mask is not None:
            for k in np.nonzero(visible)[0]:
                x, y = record.keypoint_xy[k]
                if 0 <= x < occ_mask.shape[1] and 0 <= y < occ_mask.shape[0] and occ_mask[int(y), int(x)]:
                    status[k] = 0
    vp = record.viewpoint
    out = dict(
        name=np.asarray(record.name), box=geometry.box, box_ori=geometry.box_ori, box_obj=geometry.box_obj,
        cropped_kp_list=kp, visible=status.astype(np.uint8), padding=geometry.padding,
        resize_rate=np.asarray(geometry.resize_rate, dtype=np.float64),
        azimuth=np.asarray(vp.azimuth), elevation=np.asarray(vp.elevation), theta=np.asarray(vp.theta),
        distance=np.asarray(vp.distance), focal=np.asarray(vp.focal), principal=vp.principal,
        viewport=np.asarray(vp.viewport), height=np.asarray(record.height, dtype=np.int64),
        width=np.asarray(record.width, dtype=np.int64), cad_index=np.asarray(record.cad_index, dtype=np.int64),
        bbox=record.bbox.astype(np.float64))
    if occ_mask is not None:
        out["occ_mask"] = occ_mask.astype(bool)
    return out


def prepare_image(record: ObjectRecord, image_path: Path, category: str, lay: layout.SplitLayout,
                  config: PrepareConfig, mask_path: Path | None = None) -> None:
    """Crop one image and write its JPEG and annotation npz.

    Raises:
        SkipImage naming the file and the reason (decoding, zero distance, crop, mask).
    """
    if record.viewpoint.distance == 0 and not config.keep_zero_distance:
        raise SkipImage(f"zero distance (coarse-only viewpoint) in the record of {record.name}")
    try:
        image = load_image(image_path)
        occ_mask = load_occluder_mask(mask_path) if mask_path is not None else None
        if (image.shape[1], image.shape[0]) != (record.width, record.height):
            log.debug("%s: image is %dx%d, record says %dx%d", image_path, image.shape[1], image.shape[0],
                      record.width, record.height)
        geometry = crop_geometry(record.bbox, record.viewpoint.principal, record.viewpoint.distance,
                                 image.shape[:2], layout.scaled_image_size(category, config.image_scale),
                                 config.image_scale, config.crop_center)
    except (ImageReadError, RecordError, CropError) as exc:
        raise SkipImage(str(exc)) from exc
    crop = apply_crop(image, geometry)
    anno = annotation_2d(record, geometry, occ_mask)
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="JPEG", quality=config.jpeg_quality)
    # Annotation first, image last: an image on disk means its annotation is complete.
    layout.save_annotation(lay.annotation_path(record.name), compressed=occ_mask is not None, **anno)
    atomic_write_bytes(lay.image_path(record.name), buf.getvalue())


# ----------------------------------------------------------------------------- one split


def _done_path(lay: layout.SplitLayout, stage: str) -> Path:
    return lay.root / DONE_DIR / f"{stage}_{lay.folder}.json"


def _read_done(path: Path, overwrite: bool) -> dict[str, Any] | None:
    if overwrite or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _subtype_groups(release: Pascal3DRelease, category: str,
                    split: str) -> tuple[list[str], list[list[str]] | None]:
    """Subtype names and, when NeMo's Image_subsets pkl exists, the ids per subtype."""
    subtypes = release.subtypes(category)
    subsets = release.image_subsets(category, split)
    if subsets is not None and len(subsets) != len(subtypes):
        raise ValueError(f"{release.image_subsets_path(category, split)}: {len(subsets)} groups for "
                         f"{len(subtypes)} subtypes")
    return subtypes, subsets


def prepare_split(dataroot: Path, release: Pascal3DRelease, category: str, split: str, level: str,
                  config: PrepareConfig, report: Report, occluded: OccludedRelease | None = None) -> int:
    """Crops, annotations and lists of one (split, category, occlusion level) (SPEC 6.1).

    Images come from the image set of ``split`` (or, when present, NeMo's Image_subsets
    pkl, whose groups also give the subtype lists; otherwise a record's own subtype names
    its list, ``others`` when it has none). Under an occlusion level the images come from
    OccludedPASCAL3D and ids without an occluded image are left out silently (as the
    original). Writes ``lists/<folder>/<subtype>.txt`` and ``meshNN.txt``.

    Returns:
        the number of images in the lists.
    """
    lay = layout.split_layout(dataroot, split, category, level)
    column = level or split
    done = _done_path(lay, "2d")
    marker = _read_done(done, config.overwrite)
    if marker is not None:
        report.count(category, column, "existing", marker["images"])
        return marker["images"]
    try:
        names = release.image_set(category, split)
        subtypes, subsets = _subtype_groups(release, category, split)
    except (FileNotFoundError, ValueError) as exc:   # no image set or subtype list: nothing to do
        report.skip(category, column, release.image_set_path(category, split), str(exc))
        return 0
    if subsets is not None:
        names = list(dict.fromkeys(n for group in subsets for n in group))
    n_cad = len(release.cad_model_paths(category)) if release.cad_dir(category).is_dir() else 0
    mesh_lists: dict[int, list[str]] = defaultdict(list)
    subtype_lists: dict[str, list[str]] = {s: [] for s in subtypes}
    fallback_subtype = subtypes[-1] if subtypes else "others"
    desc = f"{category}{level} {split}"
    for name in tqdm(names, desc=desc, leave=False, disable=not config.progress):
        image_path = occluded.image_path(category, level, name) if level else release.image_path(category, name)
        if not image_path.is_file():
            if level:  # not every val image has an occluded version: left out silently
                report.count(category, column, "missing")
            else:
                report.skip(category, column, image_path, f"{image_path}: image file does not exist")
            continue
        anno_path = release.annotation_path(category, name)
        try:
            record = load_record(anno_path, category)
            if lay.image_path(name).is_file() and lay.annotation_path(name).is_file() and not config.overwrite:
                report.count(category, column, "existing")
            else:
                prepare_image(record, image_path, category, lay, config,
                              occluded.mask_path(category, level, name) if level else None)
                report.count(category, column, "prepared")
        except (RecordError, SkipImage) as exc:
            report.skip(category, column, anno_path if isinstance(exc, RecordError) else image_path, str(exc))
            continue
        mesh_lists[record.cad_index].append(name)
        if subsets is None:
            subtype_lists.setdefault(record.subtype if record.subtype in subtype_lists else fallback_subtype,
                                     []).append(name)
    if subsets is not None:
        kept = set(n for group in mesh_lists.values() for n in group)
        subtype_lists = {s: [n for n in group if n in kept] for s, group in zip(subtypes, subsets)}
    for subtype, group in subtype_lists.items():
        layout.write_list(lay.lists / f"{subtype}.txt", group)
    for index in range(1, max([n_cad] + list(mesh_lists)) + 1):
        layout.write_list(lay.lists / f"mesh{index:02d}.txt", mesh_lists.get(index, []))
    n_images = sum(len(g) for g in mesh_lists.values())
    atomic_write_json(done, {"images": n_images, "image_scale": config.image_scale})
    return n_images


# ----------------------------------------------------------------------------- cuboids and 3D


def build_cuboids(dataroot: Path, release: Pascal3DRelease, category: str, mesh_dims: list[str],
                  config: PrepareConfig, report: Report) -> None:
    """``CAD_single/<cat>/01.off`` from all CAD models pooled and ``CAD_multi/<cat>/NN.off``
    per CAD model (SPEC 4), under the release folder. Unreadable CAD models are reported
    and left out."""
    todo = []
    for mesh_d in mesh_dims:
        folder = layout.cuboid_dir(dataroot, mesh_d, category)
        if config.overwrite or not (folder / ".done").is_file():
            todo.append(mesh_d)
    if not todo:
        return
    try:
        paths = release.cad_model_paths(category)
    except FileNotFoundError as exc:
        report.skip(category, "CAD", release.cad_dir(category), str(exc))
        return
    models = {}
    for path in paths:
        try:
            models[release.cad_model_index(path)] = mesh.load_off(path)[0]
        except ValueError as exc:  # MeshFormatError and bad names
            report.skip(category, "CAD", path, str(exc))
    if not models:
        report.skip(category, "CAD", release.cad_dir(category), "no readable CAD model")
        return
    for mesh_d in todo:
        folder = layout.cuboid_dir(dataroot, mesh_d, category)
        if mesh_d == "single":
            verts, faces = mesh.cuboid_from_cad(list(models.values()))
            mesh.save_off(folder / "01.off", verts, faces)
        else:
            for index, model in sorted(models.items()):
                verts, faces = mesh.cuboid_from_cad([model])
                mesh.save_off(folder / f"{index:02d}.off", verts, faces)
        atomic_write_json(folder / ".done", {"models": sorted(models)})
        report.count(category, f"CAD_{mesh_d}", "prepared", 1 if mesh_d == "single" else len(models))


def load_cuboids(dataroot: Path, category: str, mesh_d: str, config: PrepareConfig,
                 report: Report) -> dict[int, annotate3d.MeshForAnnotation]:
    """The category's cuboids by index (01 for single), with their weight directions."""
    meshes = {}
    folder = layout.cuboid_dir(dataroot, mesh_d, category)
    for path in sorted(folder.glob("*.off")) if folder.is_dir() else []:
        if not path.stem.isdigit():
            continue
        try:
            meshes[int(path.stem)] = annotate3d.MeshForAnnotation.load(path, config.annotate.weights)
        except ValueError as exc:
            report.skip(category, f"3D {mesh_d}", path, str(exc))
    return meshes


def annotate_split(dataroot: Path, category: str, split: str, mesh_d: str, config: PrepareConfig,
                   report: Report) -> int:
    """3D annotations and lists3D of one (split, category, mesh dimension) (SPEC 6.3)."""
    lay = layout.split_layout(dataroot, split, category)
    column = f"{split} 3D {mesh_d}"
    done = _done_path(lay, f"3d_{mesh_d}")
    marker = _read_done(done, config.overwrite)
    if marker is not None:
        report.count(category, column, "existing", marker["images"])
        return marker["images"]
    meshes = load_cuboids(dataroot, category, mesh_d, config, report)
    cfg = replace(config.annotate, overwrite=config.overwrite)
    sources = sorted(lay.annotations.glob("*.npz")) if lay.annotations.is_dir() else []
    for source in tqdm(sources, desc=f"{category} {split} 3D {mesh_d}", leave=False, disable=not config.progress):
        target = lay.annotation3d_path(mesh_d, source.stem)
        if target.is_file() and not cfg.overwrite:
            report.count(category, column, "existing")
            continue
        try:
            anno = layout.load_annotation(source)
            index = 1 if mesh_d == "single" else int(anno["cad_index"])
            if index not in meshes:
                raise SkipImage(f"no cuboid mesh {index:02d} in {layout.cuboid_dir(dataroot, mesh_d, category)}")
            layout.save_annotation(target, **annotate3d.annotation_3d(anno, index, meshes[index], cfg))
            report.count(category, column, "prepared")
        except (layout.AnnotationError, SkipImage) as exc:
            report.skip(category, column, source, str(exc))
    counts = annotate3d.write_lists3d(lay, mesh_d)
    _write_azimuth_lists(lay, mesh_d, config)
    n_images = counts.get("mesh01.txt", 0) if mesh_d == "single" else sum(
        n for name, n in counts.items() if name.startswith("mesh"))
    atomic_write_json(done, {"images": n_images})
    return n_images


def link_occluded(dataroot: Path, category: str, level: str, mesh_d: str, config: PrepareConfig,
                  report: Report) -> int:
    """The occluded set reuses the val 3D annotations (identical pose and crop): hard links
    (copies where links are impossible) and its own lists3D."""
    source = layout.split_layout(dataroot, "val", category)
    lay = layout.split_layout(dataroot, "val", category, level)
    column = f"{level} 3D {mesh_d}"
    done = _done_path(lay, f"3d_{mesh_d}")
    marker = _read_done(done, config.overwrite)
    if marker is not None:
        report.count(category, column, "existing", marker["images"])
        return marker["images"]
    folder = source.annotations3d(mesh_d)
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        annotate3d.link_file(path, lay.annotation3d_path(mesh_d, path.stem), config.overwrite)
    counts = annotate3d.write_lists3d(lay, mesh_d)
    _write_azimuth_lists(lay, mesh_d, config)
    n_images = counts.get("mesh01.txt", 0) if mesh_d == "single" else sum(
        n for name, n in counts.items() if name.startswith("mesh"))
    report.count(category, column, "prepared", n_images)
    atomic_write_json(done, {"images": n_images})
    return n_images


def _write_azimuth_lists(lay: layout.SplitLayout, mesh_d: str, config: PrepareConfig) -> None:
    """Optional unseen-pose lists: each lists3D file filtered to the azimuth bins of the mask."""
    if not config.azimuth_bins:
        return
    keep = annotate3d.azimuth_bin_filter(config.azimuth_bins)
    for list_path in sorted(lay.lists3d(mesh_d).glob("*.txt")):
        names = []
        for name in layout.read_list(list_path):
            with np.load(lay.annotation_path(name)) as anno:
                if keep(float(anno["azimuth"])):
                    names.append(name)
        layout.write_list(lay.lists3d_azimuth_bins(mesh_d, config.azimuth_bins) / list_path.name, names)


def _remove_prepared(dataroot: Path, category: str, levels: list[str], mesh_dims: list[str]) -> None:
    """OVERWRITE: delete a category's prepared outputs (only inside the prepared split
    folders) so that no file of an earlier run survives."""
    for split, level in [("train", ""), ("val", "")] + [("val", lv) for lv in levels]:
        lay = layout.split_layout(dataroot, split, category, level)
        folders = [lay.images, lay.annotations, lay.lists]
        for mesh_d in constants.MESH_DIMENSIONS:
            folders += [lay.annotations3d(mesh_d), lay.lists3d(mesh_d)]
        for folder in folders:
            if folder.is_dir():
                shutil.rmtree(folder)
        for done in (lay.root / DONE_DIR).glob(f"*_{lay.folder}.json"):
            done.unlink()
    for mesh_d in mesh_dims:
        folder = layout.cuboid_dir(dataroot, mesh_d, category)
        if folder.is_dir():
            shutil.rmtree(folder)


# ----------------------------------------------------------------------------- the whole run


def resolve_source(dataroot: Path, synthetic_mode: str) -> bool:
    """Whether to use the synthetic PASCAL3D+: ``auto`` uses a real (unmarked) release when
    one is at the data root, else the synthetic one; ``yes`` refuses to touch a real one;
    ``no`` requires a real one.

    Raises:
        RuntimeError with the reason when the request cannot be met.
    """
    release = layout.release_root(dataroot)
    real = release.is_dir() and not layout.is_synthetic(release)
    if synthetic_mode == "auto":
        return not real
    if synthetic_mode == "yes":
        if real:
            raise RuntimeError(f"SYNTHETIC=yes but a real PASCAL3D+ is at {release} (no {layout.SYNTHETIC_MARKER}); "
                               "refusing to mix synthetic data into it. Use another DATAROOT.")
        return True
    if synthetic_mode == "no":
        if not release.is_dir():
            raise RuntimeError(f"SYNTHETIC=no but no PASCAL3D+ at {release}; download PASCAL3D+ release 1.1 "
                               "there (ftp://cs.stanford.edu/cs/cvgl/PASCAL3D+_release1.1.zip)")
        if not real:
            raise RuntimeError(f"SYNTHETIC=no but {release} is the synthetic dataset ({layout.SYNTHETIC_MARKER})")
        return False
    raise ValueError(f"synthetic must be auto, yes or no; got {synthetic_mode!r}")


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
            raise RuntimeError(
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


def run(dataroot: str | Path, categories: list[str], mesh_dims: list[str], occluded: bool = True,
        synthetic_mode: str = "auto", synthetic_size: str = "demo", seed: int = 0,
        image_scale: float | None = None, config: PrepareConfig | None = None) -> Report:
    """Everything ``PrepareData.sh`` does, for the given categories.

    Args:
        image_scale: None = 1 for real data, 0.5 for synthetic; overrides ``config``'s.
    Returns:
        the :class:`Report` (also written to ``<dataroot>/prepare_summary.json``).
    """
    config = config or PrepareConfig()
    with torch_threads(config.threads):
        return _run(Path(dataroot), categories, mesh_dims, occluded, synthetic_mode, synthetic_size, seed,
                    image_scale, config)


def _run(dataroot: Path, categories: list[str], mesh_dims: list[str], occluded: bool, synthetic_mode: str,
         synthetic_size: str, seed: int, image_scale: float | None, config: PrepareConfig) -> Report:
    start = time.time()
    use_synthetic = resolve_source(dataroot, synthetic_mode)
    scale = image_scale if image_scale is not None else (0.5 if use_synthetic else 1.0)
    config = replace(config, image_scale=scale)
    release = Pascal3DRelease(layout.release_root(dataroot))
    synthetic_config = None
    if use_synthetic:
        banner = "#" * 88
        for line in (banner, f"# No real PASCAL3D+ at {release.root}: building the SYNTHETIC PASCAL3D+ "
                     f"(size {synthetic_size}, seed {seed}).",
                     "# Everything prepared from it is marked synthetic; its results are NOT PASCAL3D+ results.",
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
            _remove_prepared(dataroot, category, levels, mesh_dims)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Prepare NeMo's PASCAL3D+ datasets (SPEC 6): crops, annotations, cuboids, 3D annotations. "
                    "Builds the synthetic PASCAL3D+ when the real one is absent.")
    parser.add_argument("--dataroot", default="data", help="data root (default: data)")
    parser.add_argument("--categories", default="all", help="categories, e.g. 'car bus' (default: all 12)")
    parser.add_argument("--mesh-dimensions", default="single multi",
                        help="cuboid meshes to build and annotate (default: 'single multi')")
    parser.add_argument("--no-occluded", action="store_true", help="skip the occluded val sets (default: make them)")
    parser.add_argument("--synthetic", default="auto", choices=["auto", "yes", "no"],
                        help="auto: real PASCAL3D+ when present (unmarked), else synthetic (default: auto)")
    parser.add_argument("--synthetic-size", default="demo", choices=sorted(synthetic.PRESETS),
                        help="size of the synthetic dataset (default: demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset (default: 0)")
    parser.add_argument("--image-scale", default="auto",
                        help="crop scale: auto = 1 for real data, 0.5 for synthetic (default: auto)")
    parser.add_argument("--overwrite", action="store_true", help="redo finished work (default: skip it)")
    parser.add_argument("--crop-center", default="principal", choices=CROP_CENTERS,
                        help="crop window centre: principal (NeMo) or bbox (later pipeline) (default: principal)")
    parser.add_argument("--kp-weights", default="original", choices=annotate3d.WEIGHT_MODES,
                        help="3D kp_weights: original (sphere-fit directions, as NeMo) or normal (outward normals) "
                             "(default: original)")
    parser.add_argument("--keep-zero-distance", action="store_true",
                        help="keep records with distance 0 as the original does (default: report and skip)")
    parser.add_argument("--azimuth-bins", default=None,
                        help="also write unseen-pose lists3D for this azimuth mask, e.g. TFFTTFFT (default: none)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars (default: show)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads while preparing; 0 = torch's default (default: 1, fastest here)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        mesh_dims = args.mesh_dimensions.replace(",", " ").split()
        for m in mesh_dims:
            if m not in constants.MESH_DIMENSIONS:
                raise ValueError(f"unknown mesh dimension {m!r}; expected {constants.MESH_DIMENSIONS}")
        scale = None if args.image_scale == "auto" else float(args.image_scale)
        config = PrepareConfig(
            crop_center=args.crop_center, keep_zero_distance=args.keep_zero_distance, overwrite=args.overwrite,
            annotate=annotate3d.Annotate3DConfig(weights=args.kp_weights), azimuth_bins=args.azimuth_bins,
            progress=not args.no_progress, threads=args.threads)
        run(args.dataroot, constants.parse_categories(args.categories), mesh_dims, occluded=not args.no_occluded,
            synthetic_mode=args.synthetic, synthetic_size=args.synthetic_size, seed=args.seed, image_scale=scale,
            config=config)
    except (RuntimeError, ValueError, synthetic.SyntheticMismatch) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
