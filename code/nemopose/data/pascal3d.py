"""Reading the PASCAL3D+ release 1.1 (ImageNet part) and OccludedPASCAL3D (SPEC 6).

Layout read here (real or synthetic, identical):

    PASCAL3D+_release1.1/
        Images/<cat>_imagenet/<id>.JPEG
        Annotations/<cat>_imagenet/<id>.mat          ``record`` struct, see :func:`load_record`
        Image_sets/<cat>_imagenet_{train,val}.txt     one id per line
        Image_sets/<cat>_imagenet_subtype.txt         one subtype name per line
        Image_subsets/<cat>_imagenet_{train,val}.pkl  optional (NeMo's): ids per subtype
        CAD/<cat>/NN.off                              CAD models (01, 02, ...)
    OccludedPASCAL3D/
        images/<cat><LEVEL>/<id>.JPEG
        annotations/<cat><LEVEL>/<id>.npz             key ``occluder_mask`` (H x W bool)

Every reader raises an error naming the file (and the field) it could not use.
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image

from .. import constants, mesh

DATASET = "imagenet"  # only the ImageNet part of PASCAL3D+ is used
VIEWPOINT_KEYS = ("azimuth", "elevation", "theta", "distance", "focal", "px", "py", "viewport")
ANGLE_KEYS = ("azimuth", "elevation", "theta")  # degrees in the .mat files
KEYPOINT_VISIBLE = 1  # anchor status 1 = visible; 0 and 2 count as not visible


class RecordError(ValueError):
    """A PASCAL3D+ annotation record that cannot be read or lacks a field."""


class ImageReadError(ValueError):
    """An image file that cannot be decoded."""


@dataclass(frozen=True)
class Viewpoint:
    """Camera of one annotated object; angles in radians (converted from the .mat degrees)."""

    azimuth: float
    elevation: float
    theta: float
    distance: float
    focal: float
    px: float
    py: float
    viewport: float

    @property
    def principal(self) -> np.ndarray:
        """(2,) principal point (px, py) in pixels of the original image."""
        return np.array([self.px, self.py], dtype=np.float64)


@dataclass(frozen=True)
class ObjectRecord:
    """Object 0 of a PASCAL3D+ annotation record, as NeMo uses it.

    Attributes:
        name: image id (file stem).
        width, height: original image size.
        bbox: (4,) float64 ``[x0, y0, x1, y1]`` in original pixels.
        cad_index: 1-based CAD model index.
        viewpoint: :class:`Viewpoint`.
        keypoint_status: (K,) int status per keypoint of the category (constants order).
        keypoint_xy: (K, 2) float64 ``(x, y)`` locations; (0, 0) where status != 1.
        subtype: the object's subtype name when the record has one, else None.
    """

    name: str
    width: int
    height: int
    bbox: np.ndarray
    cad_index: int
    viewpoint: Viewpoint
    keypoint_status: np.ndarray
    keypoint_xy: np.ndarray
    subtype: str | None = None


# ----------------------------------------------------------------------------- records


def _field(path: Path, what: str, getter):
    """Evaluate ``getter()`` (an indexing chain into the loaded record) or raise a
    :class:`RecordError` naming the file and the field."""
    try:
        return getter()
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise RecordError(f"{path}: missing or malformed field {what!r} ({type(exc).__name__}: {exc})") from exc


def _scalar(path: Path, what: str, getter) -> float:
    value = _field(path, what, getter)
    try:
        value = float(np.asarray(value).reshape(()))
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{path}: field {what!r} is not a number ({value!r})") from exc
    if not math.isfinite(value):
        raise RecordError(f"{path}: field {what!r} is not finite ({value})")
    return value


def _string(value: Any) -> str | None:
    """A MATLAB char field as str ('' -> None)."""
    arr = np.asarray(value)
    if arr.size == 0:
        return None
    if arr.dtype.kind in "US":
        return str(arr.reshape(-1)[0]).strip() or None
    return None


def load_record(path: str | os.PathLike, category: str, object_index: int = 0) -> ObjectRecord:
    """Read one PASCAL3D+ ``.mat`` annotation (SPEC 6).

    The nesting is that of ``scipy.io.loadmat(path)['record']``:
    ``imgsize[0,0][0] = [width, height, depth]``; ``objects[0,0]`` is a 1 x N struct array;
    per object i: ``bbox[0,i][0] = [x0, y0, x1, y1]``, ``cad_index[0,i][0,0]``,
    ``viewpoint[0,i][key][0,0][0,0]``, ``anchors[0,i][kp][0,0]['status'][0,0][0,0]`` and
    ``...['location'][0,0][0] = (x, y)``. Only object ``object_index`` (0) is used; anchor
    status 1 means visible, anything else not visible with location (0, 0).

    Args:
        path: the ``.mat`` file; its stem is the image id.
        category: gives the keypoint names to read (constants.KEYPOINT_NAMES order).
    Returns:
        :class:`ObjectRecord`.
    Raises:
        RecordError naming the file and the missing or malformed field.
    """
    path = Path(path)
    constants.check_category(category)
    try:
        mat = scipy.io.loadmat(str(path))
    except FileNotFoundError as exc:
        raise RecordError(f"{path}: annotation file does not exist") from exc
    except Exception as exc:  # scipy raises several types for corrupt files
        raise RecordError(f"{path}: cannot read .mat file ({type(exc).__name__}: {exc})") from exc
    if "record" not in mat:
        raise RecordError(f"{path}: missing or malformed field 'record'")
    record = mat["record"]
    imgsize = _field(path, "imgsize", lambda: np.asarray(record["imgsize"][0, 0][0], dtype=np.float64))
    if imgsize.size < 2:
        raise RecordError(f"{path}: missing or malformed field 'imgsize' (got {imgsize})")
    width, height = int(imgsize[0]), int(imgsize[1])
    objects = _field(path, "objects", lambda: record["objects"][0, 0])
    if objects.dtype.names is None or objects.size <= object_index:
        raise RecordError(f"{path}: missing or malformed field 'objects' (no object {object_index})")
    i = object_index

    bbox = _field(path, "objects.bbox", lambda: np.asarray(objects["bbox"][0, i][0], dtype=np.float64))
    if bbox.shape != (4,) or not np.all(np.isfinite(bbox)):
        raise RecordError(f"{path}: missing or malformed field 'objects.bbox' (got {bbox})")
    cad_index = int(_scalar(path, "objects.cad_index", lambda: objects["cad_index"][0, i][0, 0]))

    view = _field(path, "objects.viewpoint", lambda: objects["viewpoint"][0, i])
    values = {}
    for key in VIEWPOINT_KEYS:
        values[key] = _scalar(path, f"objects.viewpoint.{key}", lambda key=key: view[key][0, 0][0, 0])
    for key in ANGLE_KEYS:
        values[key] = values[key] * math.pi / 180.0
    viewpoint = Viewpoint(**values)

    names = constants.KEYPOINT_NAMES[category]
    status = np.zeros(len(names), dtype=np.int64)
    xy = np.zeros((len(names), 2), dtype=np.float64)
    anchors = _field(path, "objects.anchors", lambda: objects["anchors"][0, i])
    for k, kp in enumerate(names):
        entry = _field(path, f"objects.anchors.{kp}", lambda kp=kp: anchors[kp][0, 0])
        status[k] = int(_scalar(path, f"objects.anchors.{kp}.status", lambda e=entry: e["status"][0, 0][0, 0]))
        if status[k] == KEYPOINT_VISIBLE:
            loc = _field(path, f"objects.anchors.{kp}.location",
                         lambda e=entry: np.asarray(e["location"][0, 0][0], dtype=np.float64))
            if loc.shape != (2,) or not np.all(np.isfinite(loc)):
                raise RecordError(f"{path}: missing or malformed field 'objects.anchors.{kp}.location' (got {loc})")
            xy[k] = loc
    subtype = None
    if "subtype" in objects.dtype.names:
        try:
            subtype = _string(objects["subtype"][0, i])
        except (IndexError, ValueError):
            subtype = None
    return ObjectRecord(name=path.stem, width=width, height=height, bbox=bbox, cad_index=cad_index,
                        viewpoint=viewpoint, keypoint_status=status, keypoint_xy=xy, subtype=subtype)


# ----------------------------------------------------------------------------- images


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image fully into (H, W, 3) uint8 RGB (grey images are converted).

    Raises:
        ImageReadError naming the file when it is missing, truncated or not an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()  # force the full decode: a truncated JPEG fails here, not later
            return np.array(img.convert("RGB"))
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: image file does not exist") from exc
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc


# ----------------------------------------------------------------------------- release


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def is_cad_model_file(name: str) -> bool:
    """Quirk of the original cuboid tool: only names shorter than 7 characters ending in
    ``.off`` (``01.off`` ... ``99.off``) are CAD models; other files in the folder are not."""
    return len(name) < 7 and name.endswith(".off")


@dataclass(frozen=True)
class Pascal3DRelease:
    """Paths and readers of a PASCAL3D+ release folder (``PASCAL3D+_release1.1``)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def image_dir(self, category: str) -> Path:
        return self.root / "Images" / f"{category}_{DATASET}"

    def annotation_dir(self, category: str) -> Path:
        return self.root / "Annotations" / f"{category}_{DATASET}"

    def image_path(self, category: str, name: str) -> Path:
        return self.image_dir(category) / f"{name}.JPEG"

    def annotation_path(self, category: str, name: str) -> Path:
        return self.annotation_dir(category) / f"{name}.mat"

    def image_set_path(self, category: str, split: str) -> Path:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return self.root / "Image_sets" / f"{category}_{DATASET}_{split}.txt"

    def subtype_path(self, category: str) -> Path:
        return self.root / "Image_sets" / f"{category}_{DATASET}_subtype.txt"

    def image_subsets_path(self, category: str, split: str) -> Path:
        return self.root / "Image_subsets" / f"{category}_{DATASET}_{split}.pkl"

    def cad_dir(self, category: str) -> Path:
        return self.root / "CAD" / category

    def image_set(self, category: str, split: str) -> list[str]:
        """Image ids of ``Image_sets/<cat>_imagenet_<split>.txt`` (extensions dropped)."""
        return [n.rsplit(".", 1)[0] if n.endswith(".JPEG") else n
                for n in _read_lines(self.image_set_path(category, split))]

    def subtypes(self, category: str) -> list[str]:
        """Subtype names of ``Image_sets/<cat>_imagenet_subtype.txt``."""
        return _read_lines(self.subtype_path(category))

    def image_subsets(self, category: str, split: str) -> list[list[str]] | None:
        """NeMo's optional ``Image_subsets/<cat>_imagenet_<split>.pkl``: a list indexed by
        subtype position, each an iterable of image ids; None when the file is absent."""
        path = self.image_subsets_path(category, split)
        if not path.is_file():
            return None
        try:
            with open(path, "rb") as fh:
                subsets = pickle.load(fh)
            return [[str(n) for n in group] for group in subsets]
        except Exception as exc:
            raise ValueError(f"{path}: cannot read image subsets ({type(exc).__name__}: {exc})") from exc

    def cad_model_paths(self, category: str) -> list[Path]:
        """Sorted CAD model files ``CAD/<cat>/NN.off`` (see :func:`is_cad_model_file`)."""
        folder = self.cad_dir(category)
        if not folder.is_dir():
            raise FileNotFoundError(f"CAD folder {folder} does not exist")
        return sorted(p for p in folder.iterdir() if is_cad_model_file(p.name))

    @staticmethod
    def cad_model_index(path: Path) -> int:
        """1-based index of a CAD model file (``03.off`` -> 3)."""
        try:
            return int(Path(path).stem)
        except ValueError as exc:
            raise ValueError(f"{path}: CAD model names must be NN.off") from exc

    def load_cad_model(self, category: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Vertices (V, 3) and faces (F, 3) of ``CAD/<cat>/<index:02d>.off``.

        Raises:
            mesh.MeshFormatError naming the file.
        """
        return mesh.load_off(self.cad_dir(category) / f"{index:02d}.off")


@dataclass(frozen=True)
class OccludedRelease:
    """Paths and readers of an OccludedPASCAL3D folder."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def image_dir(self, category: str, level: str) -> Path:
        return self.root / "images" / f"{category}{constants.parse_occlusion_level(level)}"

    def mask_dir(self, category: str, level: str) -> Path:
        return self.root / "annotations" / f"{category}{constants.parse_occlusion_level(level)}"

    def image_path(self, category: str, level: str, name: str) -> Path:
        return self.image_dir(category, level) / f"{name}.JPEG"

    def mask_path(self, category: str, level: str, name: str) -> Path:
        return self.mask_dir(category, level) / f"{name}.npz"


def load_occluder_mask(path: str | os.PathLike) -> np.ndarray:
    """(H, W) bool ``occluder_mask`` of an OccludedPASCAL3D annotation npz.

    Raises:
        RecordError naming the file when it is missing, unreadable or lacks the key.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "occluder_mask" not in data.files:
                raise RecordError(f"{path}: missing or malformed field 'occluder_mask'")
            mask = np.asarray(data["occluder_mask"])
    except FileNotFoundError as exc:
        raise RecordError(f"{path}: occluder mask file does not exist") from exc
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, RecordError):
            raise
        raise RecordError(f"{path}: cannot read occluder mask ({type(exc).__name__}: {exc})") from exc
    if mask.ndim != 2:
        raise RecordError(f"{path}: occluder_mask must be (H, W), got shape {mask.shape}")
    return mask.astype(bool)
