"""The PASCAL3D+ ``.mat`` annotation record: its nesting, reader and writer, in one place.

``scipy.io.loadmat(path)['record']`` of a PASCAL3D+ release 1.1 annotation has this nesting
(METHOD.md §6), read by :func:`load_record` and written by :func:`record_struct` (the synthetic
PASCAL3D+ writes its records through it, so reader and writer cannot drift apart):

    record.imgsize[0,0][0]                        [width, height, depth]
    record.objects[0,0]                           1 x N struct array; object i:
        .bbox[0,i][0]                             [x0, y0, x1, y1] (pixels)
        .cad_index[0,i][0,0]                      1-based CAD model
        .viewpoint[0,i][key][0,0][0,0]            azimuth, elevation, theta (degrees), distance,
                                                  focal, px, py, viewport (+ coarse angles)
        .anchors[0,i][kp][0,0]['status'][0,0][0,0]     1 visible; 0, 2 not
        .anchors[0,i][kp][0,0]['location'][0,0][0]     (x, y), only when visible
        .subtype[0,i]                             subtype name (optional)

Only object 0 of each record is used (as the original).
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from .. import constants
from ..errors import NemoPoseError
from ..utils import atomic_write_bytes

VIEWPOINT_KEYS = ("azimuth", "elevation", "theta", "distance", "focal", "px", "py", "viewport")
ANGLE_KEYS = ("azimuth", "elevation", "theta")  # degrees in the .mat files
KEYPOINT_VISIBLE = 1  # anchor status 1 = visible; 0 and 2 count as not visible


class RecordError(NemoPoseError, ValueError):
    """A PASCAL3D+ annotation record (or occluder mask) that cannot be read or lacks a field."""


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
    """Read one PASCAL3D+ ``.mat`` annotation (METHOD.md §6).

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


# ----------------------------------------------------------------------------- writer


def _struct(fields: dict[str, Any], shape: tuple[int, int] = (1, 1)) -> np.ndarray:
    """A MATLAB struct array for scipy.io.savemat (every element gets ``fields``)."""
    arr = np.zeros(shape, dtype=[(k, "O") for k in fields])
    for idx in np.ndindex(shape):
        for k, v in fields.items():
            arr[idx][k] = v
    return arr


def _num(value: float) -> np.ndarray:
    return np.array([[float(value)]])


def record_struct(record: ObjectRecord, category: str, source: str = "", database: str = "") -> dict[str, Any]:
    """The ``record`` of a ``.mat`` file holding one object, with the nesting of the real ones
    (what :func:`load_record` reads back; the module docstring).

    Args:
        record: the object; its keypoints are the category's, in constants order.
        category: the object class.
        source, database: provenance fields of the record.
    """
    deg = 180.0 / math.pi
    vp = record.viewpoint
    viewpoint = _struct({
        "azimuth_coarse": _num(round(vp.azimuth * deg) % 360), "elevation_coarse": _num(round(vp.elevation * deg)),
        "azimuth": _num(vp.azimuth * deg), "elevation": _num(vp.elevation * deg), "distance": _num(vp.distance),
        "focal": _num(vp.focal), "px": _num(vp.px), "py": _num(vp.py), "theta": _num(vp.theta * deg),
        "error": _num(0.0), "interval_azimuth": _num(0.0), "interval_elevation": _num(0.0), "num_anchor": _num(0.0),
        "viewport": _num(vp.viewport)})
    status, xy = record.keypoint_status, record.keypoint_xy
    anchors = _struct({kp: _struct({"location": np.array([xy[k]]) if status[k] == KEYPOINT_VISIBLE
                                    else np.zeros((0, 0)), "status": _num(status[k])})
                       for k, kp in enumerate(constants.KEYPOINT_NAMES[category])})
    objects = _struct({"class": category, "view": "", "bbox": np.array([record.bbox], dtype=np.float64),
                       "truncated": _num(0), "occluded": _num(0), "difficult": _num(0),
                       "viewpoint": viewpoint, "cad_index": np.array([[record.cad_index]], dtype=np.float64),
                       "anchors": anchors, "subtype": record.subtype or ""})
    return {"filename": f"{record.name}.JPEG", "folder": f"{category}_imagenet", "source": source,
            "imgsize": np.array([[record.width, record.height, 3]], dtype=np.float64), "database": database,
            "objects": objects, "segmented": _num(0)}


def save_struct(path: str | os.PathLike, struct: dict[str, Any]) -> None:
    """Write a :func:`record_struct` as ``{'record': struct}`` to a ``.mat`` file (atomic)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"record": struct})
    atomic_write_bytes(path, buf.getvalue())


def save_record(path: str | os.PathLike, record: ObjectRecord, category: str, source: str = "",
                database: str = "") -> None:
    """Write one object as a PASCAL3D+ ``.mat`` annotation (:func:`record_struct`)."""
    save_struct(path, record_struct(record, category, source, database))
