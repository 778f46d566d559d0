"""NeMo's per-image annotation files (METHOD.md §13): the one home of their keys, reader and writer.

Every prepared image has a 2D annotation ``annotations/<cat><LEVEL>/<id>.npz`` and, per mesh
dimension, a 3D annotation ``annotations3D_<mesh_d>/<cat><LEVEL>/<id>.npz``. The 3D file is
the 2D file with three keys given another meaning (the original's format, kept so that
caches made by the original code keep working): see :data:`FIELDS`.

Builders: :func:`annotation_2d` (a cropped PASCAL3D+ record, used by the preparation) and
:func:`annotation_3d` (a 2D annotation plus the mesh vertices, used by the 3D annotation
step). Readers: :func:`load` (checks the keys, names the file) and the small accessors
:func:`pose` and :func:`resize_rate`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import NemoPoseError
from ..utils import atomic_savez
from .crop import CropGeometry, map_to_crop, original_resize_rate

# key -> (meaning in a 2D annotation, meaning in a 3D annotation); "=" where the same.
FIELDS: dict[str, tuple[str, str]] = {
    "name": ("image id (file stem)", "="),
    "box": ("crop window [y0, y1, x0, x1, H, W] in the resized, padded image", "="),
    "box_ori": ("object bbox [y0, y1, x0, x1, H, W] in the original image, clipped to it", "="),
    "box_obj": ("object bbox [y0, y1, x0, x1, H_c, W_c] in the crop, clipped to it", "="),
    "cropped_kp_list": ("(K, 2) the category's keypoints (row, col) in the crop, (0, 0) when not visible",
                        "(nV, 2) the mesh vertices' pixels (row, col) in the crop, clamped into it"),
    "visible": ("(K,) keypoint status: 1 visible, 0 or 2 not (0 also when occluded)",
                "(nV,) vertex visible (front-most surface and inside box_ori)"),
    "azimuth": ("radians", "="), "elevation": ("radians", "="), "theta": ("radians", "="),
    "distance": ("PASCAL3D+ distance (original camera; not the render camera's)", "="),
    "focal": ("PASCAL3D+ focal f (1)", "="),
    "principal": ("(px, py) principal point in the original image", "="),
    "viewport": ("PASCAL3D+ viewport M (3000)", "="),
    "height": ("original image height", "="), "width": ("original image width", "="),
    "cad_index": ("the object's CAD model, 1-based", "the mesh the vertices belong to (1 for single)"),
    "bbox": ("object bbox [x0, y0, x1, y1] in the original image (the record's)", "="),
}
# Optional keys: written by this project (and the authors' later pipeline), not by the original.
OPTIONAL_FIELDS: dict[str, str] = {
    "padding": "(3, 2) zero padding [[top, bottom], [left, right], [0, 0]] of the resized image",
    "resize_rate": "r: crop pixels per original-image pixel (distance / 5 times the image scale)",
    "occ_mask": "(H, W) bool occluder mask over the original image (occluded 2D annotations only)",
}
KEYS_3D: dict[str, str] = {"kp_weights": "(nV,) |cos| between the vertex direction and the view ray"}
REQUIRED_KEYS: tuple[str, ...] = tuple(FIELDS)
POSE_KEYS = ("azimuth", "elevation", "theta", "distance")


class AnnotationError(NemoPoseError, ValueError):
    """An annotation file that is missing or malformed."""


def load(path: str | os.PathLike, require_3d: bool = False) -> dict[str, Any]:
    """Read an annotation npz into a dict of NumPy arrays.

    Scalars come back as 0-d arrays (use ``float(anno['azimuth'])``). The keys of
    :data:`FIELDS` must be present, and :data:`KEYS_3D` when ``require_3d``; optional keys
    are kept.

    Raises:
        AnnotationError naming the file and the missing key or the read problem.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            anno = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise AnnotationError(f"{path}: cannot read annotation ({exc})") from exc
    required = REQUIRED_KEYS + (tuple(KEYS_3D) if require_3d else ())
    missing = [k for k in required if k not in anno]
    if missing:
        raise AnnotationError(f"{path}: missing annotation keys {missing}")
    return anno


def save(path: str | os.PathLike, compressed: bool = False, **fields: Any) -> None:
    """Write an annotation npz atomically (plain arrays only: no pickled objects).

    ``compressed`` uses ``np.savez_compressed`` (worth it for annotations that carry a
    full-image ``occ_mask``); :func:`load` reads both.
    """
    for key, value in fields.items():
        if isinstance(value, np.ndarray) and value.dtype == object:
            raise ValueError(f"{path}: annotation key {key!r} is an object array")
    atomic_savez(path, compressed=compressed, **fields)


# ----------------------------------------------------------------------------- accessors


def pose(anno: Mapping[str, Any]) -> dict[str, float]:
    """The annotated pose: azimuth, elevation, theta (radians) and PASCAL3D+ distance."""
    return {k: float(anno[k]) for k in POSE_KEYS}


def resize_rate(anno: Mapping[str, Any], image_scale: float = 1.0) -> float:
    """``r`` of the crop: the stored ``resize_rate``, or for annotations made by the original
    code (which do not store it) the rate its crop used (:func:`crop.original_resize_rate`)."""
    if "resize_rate" in anno:
        return float(anno["resize_rate"])
    x0, y0, x1, y1 = np.asarray(anno["bbox"], dtype=np.float64).astype(np.int32)
    return original_resize_rate(float(anno["distance"]), (int(y1 - y0), int(x1 - x0)), image_scale)


# ----------------------------------------------------------------------------- builders


def annotation_2d(record, geometry: CropGeometry, occ_mask: np.ndarray | None) -> dict[str, Any]:
    """The 2D annotation of one cropped image.

    Args:
        record: the PASCAL3D+ object (:class:`nemopose.data.mat_record.ObjectRecord`).
        geometry: its crop (:func:`nemopose.data.crop.crop_geometry`).
        occ_mask: (H, W) occluder mask of an occlusion level, or None.

    Keypoints go through the box-to-box map as (row, col); status 1 stays visible unless the
    occluder mask covers the keypoint's original pixel (then 0); other statuses are kept
    (0 or 2) with location (0, 0), as the original stores them.
    """
    status = record.keypoint_status.copy()
    kp = np.zeros((len(status), 2), dtype=np.float64)
    visible = status == 1
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


def annotation_3d(anno: Mapping[str, Any], mesh_index: int, vertex_pixels: np.ndarray, visible: np.ndarray,
                  kp_weights: np.ndarray) -> dict[str, Any]:
    """The 3D annotation: the 2D one (without ``occ_mask``) with ``cropped_kp_list`` the
    vertex pixels (nV, 2), ``visible`` the vertex visibility (nV,), ``kp_weights`` (nV,)
    added and ``cad_index`` the mesh used (1 for the single mesh, as the original)."""
    n = len(vertex_pixels)
    if np.shape(vertex_pixels) != (n, 2) or np.shape(visible) != (n,) or np.shape(kp_weights) != (n,):
        raise ValueError(f"{anno.get('name')}: vertex pixels {np.shape(vertex_pixels)}, visible "
                         f"{np.shape(visible)} and kp_weights {np.shape(kp_weights)} must be (nV, 2), (nV,), (nV,)")
    out = {k: v for k, v in anno.items() if k != "occ_mask"}
    out.update(cropped_kp_list=np.asarray(vertex_pixels, dtype=np.float64), visible=np.asarray(visible, bool),
               kp_weights=np.asarray(kp_weights, dtype=np.float64),
               cad_index=np.asarray(mesh_index, dtype=np.int64))
    return out


def vertex_arrays(anno: Mapping[str, Any], path: str | os.PathLike,
                  image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertex pixels (nV, 2), visibility (nV,) and kp_weights (nV,) of a 3D annotation,
    checked: matching lengths and pixels inside the ``image_size`` (H, W) crop (the
    preparation clamps them; an annotation made for another crop size fails here)."""
    kp = np.asarray(anno["cropped_kp_list"], dtype=np.float64)
    visible = np.asarray(anno["visible"]).reshape(-1)
    weights = np.asarray(anno["kp_weights"], dtype=np.float64).reshape(-1)
    if kp.ndim != 2 or kp.shape[1] != 2 or visible.shape[0] != kp.shape[0] or weights.shape[0] != kp.shape[0]:
        raise AnnotationError(f"{path}: cropped_kp_list {kp.shape}, visible {visible.shape}, "
                              f"kp_weights {weights.shape} do not match (nV, 2), (nV,), (nV,)")
    if len(kp) and (kp.min() < 0 or kp[:, 0].max() >= image_size[0] or kp[:, 1].max() >= image_size[1]):
        raise AnnotationError(f"{path}: vertex pixels outside the {image_size[0]}x{image_size[1]} crop; "
                              "was it prepared at another image scale? Re-run PrepareData.sh")
    return kp, visible, weights
