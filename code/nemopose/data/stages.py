"""The stages of the dataset preparation (METHOD.md §6), per category, split and occlusion level.

- :func:`build_cuboids`: ``CAD_single/<cat>/01.off`` and ``CAD_multi/<cat>/NN.off`` (METHOD.md §4, §6.2);
- :func:`prepare_split`: 2D crops, annotations and lists of a split (METHOD.md §6.1);
- :func:`annotate_split`: 3D annotations and lists3D (METHOD.md §6.3);
- :func:`link_occluded`: the occluded sets reuse the val 3D annotations.

Every stage is idempotent: it writes a done-marker last (:func:`nemopose.data.layout.write_done`)
and is skipped when the marker is there. Bad inputs are reported in the :class:`Report` with
the file and the reason, and skipped. :mod:`nemopose.data.prepare` runs the stages.
"""

from __future__ import annotations

import io
import logging
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

from .. import constants, mesh
from ..cli.progress import progress_bar
from ..utils import atomic_write_bytes
from . import annotate3d, annotation, layout
from .crop import CROP_CENTERS, CropError, apply_crop, crop_geometry
from .mat_record import ObjectRecord, RecordError, load_record
from .pascal3d import ImageReadError, OccludedRelease, Pascal3DRelease, load_image_array, load_occluder_mask

log = logging.getLogger(__name__)

JPEG_QUALITY = 75  # PIL's default, which the original's Image.save used
SUMMARY_FILE = "prepare_summary.json"


class SkipImage(ValueError):
    """An input that is reported and skipped (the message names the file and the reason)."""


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class PrepareConfig:
    """Settings of the preparation (defaults = the original's behaviour).

    Attributes:
        mesh_dims: cuboid meshes to build and annotate ('single', 'multi').
        occluded: also prepare the occluded val sets.
        synthetic: 'auto' (the real PASCAL3D+ when present, else the synthetic one), 'yes'
            or 'no'; synthetic_size, seed: of the synthetic dataset.
        image_scale: crops are ``layout.scaled_image_size(cat, image_scale)`` and r is
            multiplied by it (1 = faithful; the synthetic CPU demo uses 0.5); None (default)
            = 1 for real data, 0.5 for synthetic.
        download, download_mirror, keep_archives: what may be downloaded ('auto' or 'no'),
            from where (None: the authors' sources; else a base URL or folder holding the
            archives), and whether archives are kept after unpacking.
        crop_center: ``principal`` (NeMo) or ``bbox`` (the authors' later pipeline).
        keep_zero_distance: the original keeps records with distance 0 (coarse-only
            viewpoints; r falls back to 224 / min(bbox h, w), the camera uses 0.1). By
            default they are reported and skipped.
        overwrite: redo existing outputs.
        annotate: settings of the 3D annotations.
        azimuth_bins: optional unseen-pose mask (e.g. ``TFFTTFFT``) for extra lists3D.
        jpeg_quality: of the saved crops.
        progress: show progress (:func:`nemopose.progress.progress_bar`).
        threads: torch intra-op threads while preparing (its tensors are small: one thread
            is as fast on an idle machine and many times faster on a busy one, where
            OpenMP threads wait for each other; 0 keeps torch's setting).
    """

    mesh_dims: tuple[str, ...] = ("single", "multi")
    occluded: bool = True
    synthetic: str = "auto"
    synthetic_size: str = "demo"
    seed: int = 0
    image_scale: float | None = None
    crop_center: str = "principal"
    keep_zero_distance: bool = False
    overwrite: bool = False
    annotate: annotate3d.Annotate3DConfig = field(default_factory=annotate3d.Annotate3DConfig)
    azimuth_bins: str | None = None
    jpeg_quality: int = JPEG_QUALITY
    progress: bool = True
    threads: int = 1
    download: str = "auto"
    download_mirror: str | None = None
    keep_archives: bool = False

    def __post_init__(self) -> None:
        if self.image_scale is not None and not self.image_scale > 0:
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


def prepare_image(record: ObjectRecord, image_path: Path, category: str, lay: layout.SplitLayout,
                  config: PrepareConfig, mask_path: Path | None = None) -> None:
    """Crop one image and write its JPEG and annotation npz.

    Raises:
        SkipImage naming the file and the reason (decoding, zero distance, crop, mask).
    """
    if record.viewpoint.distance == 0 and not config.keep_zero_distance:
        raise SkipImage(f"zero distance (coarse-only viewpoint) in the record of {record.name}")
    try:
        image = load_image_array(image_path)
        occ_mask = load_occluder_mask(mask_path) if mask_path is not None else None
        if (image.shape[1], image.shape[0]) != (record.width, record.height):
            log.debug("%s: image is %dx%d, record says %dx%d", image_path, image.shape[1], image.shape[0],
                      record.width, record.height)
        geometry = crop_geometry(record.bbox, record.viewpoint.principal, record.viewpoint.distance,
                                 image.shape[:2], constants.image_size(category, config.image_scale),
                                 config.image_scale, config.crop_center)
    except (ImageReadError, RecordError, CropError) as exc:
        raise SkipImage(str(exc)) from exc
    crop = apply_crop(image, geometry)
    anno = annotation.annotation_2d(record, geometry, occ_mask)
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="JPEG", quality=config.jpeg_quality)
    # Annotation first, image last: an image on disk means its annotation is complete.
    annotation.save(lay.annotation_path(record.name), compressed=occ_mask is not None, **anno)
    atomic_write_bytes(lay.image_path(record.name), buf.getvalue())


# ----------------------------------------------------------------------------- one split


def _finished(lay: layout.SplitLayout, stage: str, column: str, config: "PrepareConfig",
              report: "Report") -> tuple[Path, int | None]:
    """The done-marker of (stage, split folder) and, when the stage has finished (and is not
    being redone), its image count, which is added to the report as existing."""
    path = layout.done_path(lay.root, stage, lay.folder)
    marker = None if config.overwrite else layout.read_done(path)
    if marker is None:
        return path, None
    report.count(lay.category, column, "existing", marker["images"])
    return path, marker["images"]


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
    """Crops, annotations and lists of one (split, category, occlusion level) (METHOD.md §6.1).

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
    done, finished = _finished(lay, "2d", column, config, report)
    if finished is not None:
        return finished
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
    for name in progress_bar(names, desc=desc, leave=False, disable=not config.progress):
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
    layout.write_done(done, {"images": n_images, "image_scale": config.image_scale})
    return n_images


# ----------------------------------------------------------------------------- cuboids and 3D


def build_cuboids(dataroot: Path, release: Pascal3DRelease, category: str, mesh_dims: list[str],
                  config: PrepareConfig, report: Report) -> None:
    """``CAD_single/<cat>/01.off`` from all CAD models pooled and ``CAD_multi/<cat>/NN.off``
    per CAD model (METHOD.md §4), under the release folder. Unreadable CAD models are reported
    and left out."""
    release_root = layout.release_root(dataroot)
    todo = [m for m in mesh_dims
            if config.overwrite or layout.read_done(layout.done_path(release_root, f"cuboids_{m}", category)) is None]
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
        layout.write_done(layout.done_path(release_root, f"cuboids_{mesh_d}", category), {"models": sorted(models)})
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
    """3D annotations and lists3D of one (split, category, mesh dimension) (METHOD.md §6.3)."""
    lay = layout.split_layout(dataroot, split, category)
    column = f"{split} 3D {mesh_d}"
    done, finished = _finished(lay, f"3d_{mesh_d}", column, config, report)
    if finished is not None:
        return finished
    meshes = load_cuboids(dataroot, category, mesh_d, config, report)
    sources = sorted(lay.annotations.glob("*.npz")) if lay.annotations.is_dir() else []
    for source in progress_bar(sources, desc=f"{category} {split} 3D {mesh_d}", leave=False,
                               disable=not config.progress):
        target = lay.annotation3d_path(mesh_d, source.stem)
        if target.is_file() and not config.overwrite:
            report.count(category, column, "existing")
            continue
        try:
            anno = annotation.load(source)
            index = 1 if mesh_d == "single" else int(anno["cad_index"])
            if index not in meshes:
                raise SkipImage(f"no cuboid mesh {index:02d} in {layout.cuboid_dir(dataroot, mesh_d, category)}")
            annotation.save(target, **annotate3d.annotation_3d(anno, index, meshes[index], config.annotate))
            report.count(category, column, "prepared")
        except (annotation.AnnotationError, SkipImage) as exc:
            report.skip(category, column, source, str(exc))
    return _finish_lists3d(lay, mesh_d, config, done)


def link_occluded(dataroot: Path, category: str, level: str, mesh_d: str, config: PrepareConfig,
                  report: Report) -> int:
    """The occluded set reuses the val 3D annotations (identical pose and crop): hard links
    (copies where links are impossible) and its own lists3D."""
    source = layout.split_layout(dataroot, "val", category)
    lay = layout.split_layout(dataroot, "val", category, level)
    column = f"{level} 3D {mesh_d}"
    done, finished = _finished(lay, f"3d_{mesh_d}", column, config, report)
    if finished is not None:
        return finished
    folder = source.annotations3d(mesh_d)
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        annotate3d.link_file(path, lay.annotation3d_path(mesh_d, path.stem), config.overwrite)
    n_images = _finish_lists3d(lay, mesh_d, config, done)
    report.count(category, column, "prepared", n_images)
    return n_images


def _finish_lists3d(lay: layout.SplitLayout, mesh_d: str, config: PrepareConfig, done: Path) -> int:
    """Write the lists3D (and unseen-pose lists) of a split folder, then its done-marker;
    returns the number of images in the mesh lists."""
    counts = annotate3d.write_lists3d(lay, mesh_d)
    write_azimuth_lists(lay, mesh_d, config)
    n_images = counts.get("mesh01.txt", 0) if mesh_d == "single" else sum(
        n for name, n in counts.items() if name.startswith("mesh"))
    layout.write_done(done, {"images": n_images})
    return n_images


def write_azimuth_lists(lay: layout.SplitLayout, mesh_d: str, config: PrepareConfig) -> None:
    """Optional unseen-pose lists: each lists3D file filtered to the azimuth bins of the mask."""
    if not config.azimuth_bins:
        return
    keep = annotate3d.azimuth_bin_filter(config.azimuth_bins)
    for list_path in sorted(lay.lists3d(mesh_d).glob("*.txt")):
        names = []
        for name in layout.read_list(list_path):
            if keep(annotation.pose(annotation.load(lay.annotation_path(name)))["azimuth"]):
                names.append(name)
        layout.write_list(lay.lists3d_azimuth_bins(mesh_d, config.azimuth_bins) / list_path.name, names)


def remove_prepared(dataroot: Path, category: str, levels: list[str], mesh_dims: list[str]) -> None:
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
        layout.clear_done(lay.root, lay.folder)
    for mesh_d in mesh_dims:
        folder = layout.cuboid_dir(dataroot, mesh_d, category)
        if folder.is_dir():
            shutil.rmtree(folder)
        layout.done_path(layout.release_root(dataroot), f"cuboids_{mesh_d}", category).unlink(missing_ok=True)
