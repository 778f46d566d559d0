"""NeMo's crop-and-rescale of a PASCAL3D+ image (METHOD.md §6.1) and the box-to-box map.

The original works with integer boxes (its ``BboxTools``): every box coordinate is
truncated to int when the box is built or scaled. Those truncations decide where the
crop window and the object box land, so they are reproduced here exactly:

- ``box`` (original bbox, x0 y0 x1 y1 floats) -> ints by truncation;
- ``r = distance / 5`` (the original writes ``200 * d / 1000``), or ``224 / min(h, w)`` of
  the int box when ``r <= 0``; times ``image_scale`` (ours; 1 = faithful);
- the whole image is resized to ``int(W r) x int(H r)`` (bilinear, cv2 semantics);
- the object box in the resized image is ``int(coordinate * r)`` of the int box;
- the crop window of the category size ``(Hc, Wc)`` is centred on
  ``(int(py r), int(px r))``: rows ``[cy - Hc//2, cy + Hc - Hc//2)``, likewise columns;
  zero padding where it leaves the image;
- the object box in the crop is clipped to the crop; the original bbox is clipped to the
  image (``box_ori``).

Boxes are saved as ``[y0, y1, x0, x1, H, W]`` (end-exclusive, with their bounding shape).
Points move from the original image to the crop by the per-axis linear map that sends
``box_ori`` onto ``box_obj`` (:func:`map_to_crop`), for keypoints and mesh vertices alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import constants, geometry

FALLBACK_OBJECT_SIZE = 224  # r = 224 / min(bbox h, w) when the distance gives r <= 0


class CropError(ValueError):
    """An object whose crop cannot be built (e.g. it lies outside the crop window)."""


def original_resize_rate(distance: float, box_hw: tuple[int, int], image_scale: float = 1.0) -> float:
    """``r = 200 * distance / 1000`` (= distance / 5, the object's size at distance 5), or
    ``224 / min(h, w)`` of the int bbox when that is <= 0; times ``image_scale``.

    The original's order of operations (``float(200 * d / 1000)``) is kept so that the
    rate, and with it every truncation downstream, is bit-identical.
    """
    rate = float(200 * distance / 1000)   # = distance / constants.OBJECT_NORMALIZE_DISTANCE
    if rate <= 0:
        if min(box_hw) <= 0:
            raise CropError(f"distance {distance} gives no scale and the bbox {box_hw} is empty")
        rate = FALLBACK_OBJECT_SIZE / min(box_hw)
    return rate * image_scale


@dataclass(frozen=True)
class CropGeometry:
    """Where the crop of one image comes from.

    Attributes:
        resize_rate: r (including ``image_scale``).
        resized_shape: (H_r, W_r) = (int(H r), int(W r)).
        padding: (3, 2) int64 ``[[top, bottom], [left, right], [0, 0]]`` zero padding of
            the resized image (the later NeMo pipeline's ``padding`` key).
        box: (6,) float32 crop window ``[y0, y1, x0, x1, H_p, W_p]`` in the padded image.
        box_ori: (6,) float32 object bbox in the original image, clipped, ``H, W`` of it.
        box_obj: (6,) float32 object bbox in the crop, clipped, ``H_c, W_c``.
    """

    resize_rate: float
    resized_shape: tuple[int, int]
    padding: np.ndarray
    box: np.ndarray
    box_ori: np.ndarray
    box_obj: np.ndarray

    @property
    def out_shape(self) -> tuple[int, int]:
        return int(self.box_obj[4]), int(self.box_obj[5])


def _clip_box(y0: int, y1: int, x0: int, x1: int, h: int, w: int) -> tuple[int, int, int, int]:
    """BboxTools' ``set_boundary``: clamp the end to the shape and the start to 0."""
    return max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)


CROP_CENTERS = ("principal", "bbox")


def crop_geometry(bbox: np.ndarray, principal: np.ndarray, distance: float, image_hw: tuple[int, int],
                  out_shape: tuple[int, int], image_scale: float = 1.0,
                  center: str = "principal", resize_rate: float | None = None) -> CropGeometry:
    """Crop window, padding and object boxes of METHOD.md §6.1 for one object.

    Args:
        bbox: (4,) ``[x0, y0, x1, y1]`` object bbox in the original image.
        principal: (2,) ``(px, py)``.
        distance: the viewpoint distance.
        image_hw: (H, W) of the original image.
        out_shape: (H_c, W_c) crop size (even sides, as all category sizes are).
        image_scale: extra factor on r (1 = faithful).
        center: ``"principal"`` (NeMo: the principal point scaled by r, truncated) or
            ``"bbox"`` (the authors' later pipeline, e.g. the VoGE sample car: the centre
            ``(lo + hi) // 2`` of the scaled int object box).
        resize_rate: r given directly (``distance`` and ``image_scale`` are then unused): the
            photo predictor crops a box at the scale of the training objects this way.
    Returns:
        :class:`CropGeometry`.
    Raises:
        CropError when the object box is empty in the image or in the crop.
    """
    height, width = int(image_hw[0]), int(image_hw[1])
    out_h, out_w = int(out_shape[0]), int(out_shape[1])
    if out_h % 2 or out_w % 2:
        raise ValueError(f"crop size must be even, got {out_shape}")
    bx0, by0, bx1, by1 = (int(v) for v in np.asarray(bbox, dtype=np.float64).astype(np.int32))
    rate = (float(resize_rate) if resize_rate is not None
            else original_resize_rate(distance, (by1 - by0, bx1 - bx0), image_scale))
    if not rate > 0:
        raise CropError(f"resize rate must be > 0, got {rate}")

    oy0, oy1, ox0, ox1 = _clip_box(by0, by1, bx0, bx1, height, width)
    if oy1 <= oy0 or ox1 <= ox0:
        raise CropError(f"object bbox {list(np.asarray(bbox))} lies outside the {width}x{height} image")

    res_h, res_w = int(height * rate), int(width * rate)
    # The scaled object box (BboxTools' box * r truncates every coordinate).
    sy0, sy1, sx0, sx1 = int(by0 * rate), int(by1 * rate), int(bx0 * rate), int(bx1 * rate)
    if center == "principal":
        cy, cx = (int(v) for v in (np.asarray(principal, dtype=np.float64)[::-1] * rate).astype(int))
    elif center == "bbox":
        cy, cx = (sy0 + sy1) // 2, (sx0 + sx1) // 2
    else:
        raise ValueError(f"center must be one of {CROP_CENTERS}, got {center!r}")
    wy0, wx0 = cy - out_h // 2, cx - out_w // 2
    pad_top, pad_bottom = max(out_h // 2 - cy, 0), max(out_h // 2 + cy - res_h, 0)
    pad_left, pad_right = max(out_w // 2 - cx, 0), max(out_w // 2 + cx - res_w, 0)
    pad_h, pad_w = res_h + pad_top + pad_bottom, res_w + pad_left + pad_right
    # Window and object box in the padded image.
    wy0, wx0 = wy0 + pad_top, wx0 + pad_left
    wy1, wx1 = wy0 + out_h, wx0 + out_w
    sy0, sy1, sx0, sx1 = sy0 + pad_top, sy1 + pad_top, sx0 + pad_left, sx1 + pad_left
    # Object box relative to the window, clipped to the crop.
    ky0, ky1, kx0, kx1 = _clip_box(sy0 - wy0, sy1 - wy0, sx0 - wx0, sx1 - wx0, out_h, out_w)
    if ky1 <= ky0 or kx1 <= kx0:
        raise CropError(f"object bbox {list(np.asarray(bbox))} lies outside the {out_h}x{out_w} crop")
    padding = np.array([[pad_top, pad_bottom], [pad_left, pad_right], [0, 0]], dtype=np.int64)
    return CropGeometry(
        resize_rate=rate, resized_shape=(res_h, res_w), padding=padding,
        box=np.array([wy0, wy1, wx0, wx1, pad_h, pad_w], dtype=np.float32),
        box_ori=np.array([oy0, oy1, ox0, ox1, height, width], dtype=np.float32),
        box_obj=np.array([ky0, ky1, kx0, kx1, out_h, out_w], dtype=np.float32))


def resize_bilinear(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize (H, W, 3) uint8 to ``size_hw`` like ``cv2.resize(..., INTER_LINEAR)``:
    half-pixel centres, no antialiasing, rounded back to uint8."""
    if image.ndim != 3:
        raise ValueError(f"resize_bilinear: expected (H, W, C), got {image.shape}")
    if tuple(image.shape[:2]) == tuple(size_hw):
        return image.copy()
    x = torch.from_numpy(np.array(image, copy=not image.flags.writeable)).permute(2, 0, 1)[None].float()
    y = torch.nn.functional.interpolate(x, size=tuple(int(s) for s in size_hw), mode="bilinear",
                                        align_corners=False, antialias=False)
    return y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def apply_crop(image: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """Resize the whole image by r, zero-pad and cut the window: (H_c, W_c, 3) uint8."""
    resized = resize_bilinear(image, geometry.resized_shape)
    (top, _), (left, _), _ = geometry.padding
    wy0, wy1, wx0, wx1 = (int(v) for v in geometry.box[:4])
    out = np.zeros((wy1 - wy0, wx1 - wx0, image.shape[2]), dtype=np.uint8)
    # Window in resized-image coordinates, intersected with the resized image.
    ry0, ry1, rx0, rx1 = wy0 - top, wy1 - top, wx0 - left, wx1 - left
    sy0, sy1 = max(ry0, 0), min(ry1, resized.shape[0])
    sx0, sx1 = max(rx0, 0), min(rx1, resized.shape[1])
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - ry0:sy1 - ry0, sx0 - rx0:sx1 - rx0] = resized[sy0:sy1, sx0:sx1]
    return out


def map_to_crop(points_rc: np.ndarray, box_ori: np.ndarray, box_obj: np.ndarray) -> np.ndarray:
    """Map (row, col) points of the original image into the crop.

    The per-axis linear map sending ``box_ori`` onto ``box_obj`` (both
    ``[y0, y1, x0, x1, ...]``, truncated to int as the original reads them):
    ``p' = (p - lo_ori) * size_obj / size_ori + lo_obj``.

    Args:
        points_rc: (N, 2) row, col.
    Returns:
        (N, 2) float64 row, col in the crop (not clipped).
    """
    ori = np.asarray(box_ori).astype(np.int32)
    obj = np.asarray(box_obj).astype(np.int32)
    lo_ori = np.array([ori[0], ori[2]], dtype=np.float64)
    lo_obj = np.array([obj[0], obj[2]], dtype=np.float64)
    size_ori = np.array([ori[1] - ori[0], ori[3] - ori[2]], dtype=np.float64)
    size_obj = np.array([obj[1] - obj[0], obj[3] - obj[2]], dtype=np.float64)
    if np.any(size_ori <= 0):
        raise CropError(f"empty original box {ori[:4].tolist()}")
    return (np.asarray(points_rc, dtype=np.float64) - lo_ori) * (size_obj / size_ori) + lo_obj



def render_distance_for_crop(crop_hw: tuple[int, int], image_scale: float = 1.0) -> float:
    """The render distance at which the pose solver's camera shows an object at the size the
    prepared crops show it (:func:`nemopose.geometry.render_distance` with ``r = s d / 5``).

    The crop rescales by ``r = s d / 5`` (s = ``image_scale``), so in feature-map cells an
    object at distance d is projected with scale ``M f r / (8 d) = M f s / 40`` per CAD
    unit, the same for every d (that is what the normalisation is for), and the render
    camera matches it at ``d_r = 40 f_r / (M f s)``: car 256 x 672 at scale 1: S = 84,
    f_r = 399.6, d_r = 5.33 (the solver starts at 5 and optimises the distance freely).
    Both cameras put the principal point at the crop's centre (to within a crop pixel: the
    window is centred on ``int(p r)``) and share the angles, so vertex pixels / 8 agree
    with the render projection at (a, e, theta, d_r) up to the perspective difference
    between depths d and d_r (small: ~0.1 cell at d ~ 5) and the integer truncations.

    Args:
        crop_hw: (H_c, W_c) crop size (``constants.image_size(cat, image_scale)``).
    """
    map_size = (crop_hw[0] // constants.DOWNSAMPLE_RATE, crop_hw[1] // constants.DOWNSAMPLE_RATE)
    distance = constants.OBJECT_NORMALIZE_DISTANCE
    return float(geometry.render_distance(distance, image_scale * distance / constants.OBJECT_NORMALIZE_DISTANCE,
                                          map_size))
