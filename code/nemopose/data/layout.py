"""The on-disk layout of NeMo's prepared datasets (METHOD.md §13) and its small readers.

Every other module finds files through these helpers, so the layout is defined once:

    <dataroot>/PASCAL3D+_release1.1/              the PASCAL3D+ release (real or synthetic)
        CAD/<cat>/NN.off, CAD_single/<cat>/01.off, CAD_multi/<cat>/NN.off
    <dataroot>/OccludedPASCAL3D/                  Occluded-PASCAL3D+ (real or synthetic)
    <dataroot>/PASCAL3D_train_NeMo/               prepared training split
    <dataroot>/PASCAL3D_NeMo/                     prepared validation split (L0)
    <dataroot>/PASCAL3D_OCC_NeMo/                 prepared occluded validation splits
        images/<cat><LEVEL>/<id>.JPEG
        annotations/<cat><LEVEL>/<id>.npz
        lists/<cat><LEVEL>/<subtype>.txt, meshNN.txt
        annotations3D_<single|multi>/<cat><LEVEL>/<id>.npz
        lists3D_<single|multi>/<cat><LEVEL>/meshNN.txt
        dataset.json                              provenance (synthetic or real, image scale)
        .done/<stage>_<cat><LEVEL>.json           done-markers of the preparation stages

A synthetic release or occluded folder carries ``SYNTHETIC.json`` (:func:`is_synthetic`).
The annotation files' keys are defined in :mod:`nemopose.data.annotation`.

Done-markers: a preparation stage that finished writes one small JSON file last
(:func:`write_done`); a rerun skips the stage when it is there (:func:`read_done`), so an
interrupted run redoes only what was not finished. Every stage uses this one convention.

``<LEVEL>`` is empty for the unoccluded sets and one of FGL1_BGL1, FGL2_BGL2, FGL3_BGL3.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import constants
from ..errors import DataNotFound
from ..utils import atomic_write_json, atomic_write_text

RELEASE_DIR = "PASCAL3D+_release1.1"
OCCLUDED_DIR = "OccludedPASCAL3D"
SPLIT_DIRS = {"train": "PASCAL3D_train_NeMo", "val": "PASCAL3D_NeMo", "occ": "PASCAL3D_OCC_NeMo"}
DATASET_INFO = "dataset.json"
# Written by the synthetic generator into the release and occluded folders it creates, so
# that a synthetic dataset is never mistaken for PASCAL3D+ (METHOD.md §14).
SYNTHETIC_MARKER = "SYNTHETIC.json"

def split_root(dataroot: str | os.PathLike, split: str, occ_level: str = "") -> Path:
    """Prepared dataset folder for ``split`` in {'train', 'val'}; occluded val sets
    (``occ_level`` non-empty) live in PASCAL3D_OCC_NeMo."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if occ_level:
        if split != "val":
            raise ValueError("occluded sets exist for the val split only")
        return Path(dataroot) / SPLIT_DIRS["occ"]
    return Path(dataroot) / SPLIT_DIRS[split]


def category_folder(category: str, occ_level: str = "") -> str:
    """``car`` or ``carFGL1_BGL1``."""
    constants.check_category(category)
    return category + constants.parse_occlusion_level(occ_level)


@dataclass(frozen=True)
class SplitLayout:
    """Paths inside one prepared split for one category and occlusion level."""

    root: Path
    category: str
    occ_level: str = ""

    @property
    def folder(self) -> str:
        return category_folder(self.category, self.occ_level)

    @property
    def images(self) -> Path:
        return self.root / "images" / self.folder

    @property
    def annotations(self) -> Path:
        return self.root / "annotations" / self.folder

    @property
    def lists(self) -> Path:
        return self.root / "lists" / self.folder

    def annotations3d(self, mesh_d: str) -> Path:
        return self.root / f"annotations3D_{constants.check_mesh_d(mesh_d)}" / self.folder

    def lists3d(self, mesh_d: str) -> Path:
        return self.root / f"lists3D_{constants.check_mesh_d(mesh_d)}" / self.folder

    def image_path(self, name: str) -> Path:
        return self.images / f"{name}.JPEG"

    def annotation_path(self, name: str) -> Path:
        return self.annotations / f"{name}.npz"

    def annotation3d_path(self, mesh_d: str, name: str) -> Path:
        return self.annotations3d(mesh_d) / f"{name}.npz"

    def mesh_list_path(self, mesh_d: str, mesh_index: int) -> Path:
        return self.lists3d(mesh_d) / f"mesh{mesh_index:02d}.txt"

    def lists3d_azimuth_bins(self, mesh_d: str, mask: str) -> Path:
        """Unseen-pose lists keeping the azimuth bins of ``mask`` (e.g. ``TFFTTFFT``).

        The folder name ``lists3D_<mesh_d>_azum_<mask>`` is the original tool's, kept so
        that lists made by the original code are found.
        """
        return self.root / f"lists3D_{constants.check_mesh_d(mesh_d)}_azum_{mask}" / self.folder


def split_layout(dataroot: str | os.PathLike, split: str, category: str, occ_level: str = "") -> SplitLayout:
    occ_level = constants.parse_occlusion_level(occ_level)
    return SplitLayout(split_root(dataroot, split, occ_level), category, occ_level)


def release_root(dataroot: str | os.PathLike) -> Path:
    return Path(dataroot) / RELEASE_DIR


def occluded_root(dataroot: str | os.PathLike) -> Path:
    return Path(dataroot) / OCCLUDED_DIR


def is_synthetic(folder: str | os.PathLike) -> bool:
    """True when ``folder`` (a release or occluded folder) carries the synthetic marker."""
    return (Path(folder) / SYNTHETIC_MARKER).is_file()


def cuboid_dir(dataroot: str | os.PathLike, mesh_d: str, category: str) -> Path:
    """Folder of the cuboid meshes ``CAD_<mesh_d>/<cat>/`` in the release folder."""
    return release_root(dataroot) / f"CAD_{constants.check_mesh_d(mesh_d)}" / constants.check_category(category)


def cuboid_paths(dataroot: str | os.PathLike, mesh_d: str, category: str) -> list[Path]:
    """Sorted cuboid mesh files ``01.off, 02.off, ...`` of a category."""
    folder = cuboid_dir(dataroot, mesh_d, category)
    paths = sorted(p for p in folder.glob("*.off") if p.stem.isdigit())
    if not paths:
        raise DataNotFound(f"no cuboid meshes in {folder}; run PrepareData.sh first")
    return paths


# ----------------------------------------------------------------------------- lists


def read_list(path: str | os.PathLike) -> list[str]:
    """Image ids of a list file (one ``<id>.JPEG`` per line); the extension is dropped."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFound(f"list file {path} does not exist; run PrepareData.sh first")
    names = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            names.append(line.rsplit(".", 1)[0] if line.lower().endswith((".jpeg", ".jpg", ".png")) else line)
    return names


def write_list(path: str | os.PathLike, names: list[str], extension: str = ".JPEG") -> None:
    atomic_write_text(path, "".join(f"{n}{extension}\n" for n in names))


# ----------------------------------------------------------------------------- done-markers


DONE_DIR = ".done"


def done_path(root: str | os.PathLike, stage: str, folder: str) -> Path:
    """``<root>/.done/<stage>_<folder>.json``: the marker of a finished preparation stage
    (``root`` a split or release folder, ``folder`` e.g. ``car`` or ``carFGL1_BGL1``)."""
    return Path(root) / DONE_DIR / f"{stage}_{folder}.json"


def read_done(path: str | os.PathLike) -> dict[str, Any] | None:
    """The content of a done-marker, or None when the stage has not finished."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def write_done(path: str | os.PathLike, content: dict[str, Any]) -> None:
    """Mark a stage finished (written last, atomically)."""
    atomic_write_json(path, content)


def clear_done(root: str | os.PathLike, folder: str) -> None:
    """Remove every done-marker of ``folder`` under ``root`` (OVERWRITE)."""
    for path in (Path(root) / DONE_DIR).glob(f"*_{folder}.json"):
        path.unlink()


# ----------------------------------------------------------------------------- which categories


def prepared_categories(dataroot: str | os.PathLike, mesh_d: str, split: str = "train") -> list[str]:
    """Categories with a prepared ``lists3D_<mesh_d>`` mesh list in ``split``: what "all"
    means for training."""
    out = []
    for cat in constants.CATEGORIES:
        lists = split_layout(dataroot, split, cat).lists3d(mesh_d)
        if any(lists.glob("mesh*.txt")):
            out.append(cat)
    return out


# ----------------------------------------------------------------------------- provenance


@dataclass
class DatasetInfo:
    """Provenance of a prepared dataset, saved as ``dataset.json`` in each split folder.

    Attributes:
        synthetic: True for the generated synthetic PASCAL3D+ (tables say so).
        image_scale: crops are the category image size times this (1.0 = faithful);
            objects are rescaled by ``image_scale * distance / 5``.
        source: where the raw data came from.
        extra: anything else worth recording (generator seed, size preset, ...).
    """

    synthetic: bool = False
    image_scale: float = 1.0
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def image_size(self, category: str) -> tuple[int, int]:
        """Crop size (H, W) of ``category`` in this dataset."""
        return constants.image_size(category, self.image_scale)

    def feature_map_size(self, category: str) -> tuple[int, int]:
        """(h, w) of the network's stride-8 feature maps of this dataset's crops."""
        return constants.feature_map_size(category, self.image_scale)


def save_dataset_info(folder: str | os.PathLike, info: DatasetInfo) -> None:
    atomic_write_json(Path(folder) / DATASET_INFO, asdict(info))


def load_dataset_info(folder: str | os.PathLike) -> DatasetInfo:
    """``dataset.json`` of a prepared split folder; a folder without one is taken to be a
    real PASCAL3D+ preparation at scale 1 (e.g. made by the original code)."""
    path = Path(folder) / DATASET_INFO
    if not path.is_file():
        return DatasetInfo(synthetic=False, image_scale=1.0, source="unknown (no dataset.json)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from exc
    return DatasetInfo(**{k: raw[k] for k in ("synthetic", "image_scale", "source", "extra") if k in raw})
