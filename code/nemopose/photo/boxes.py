"""Boxes in photos, and the crop that puts a boxed object where the network expects it.

A PASCAL3D+ object is prepared for NeMo by resizing its image so that the object would be
at distance 5 (``r = d / 5``), then cutting the category's crop centred on it, zero-padded
where the window leaves the image (METHOD.md §6.1). A photo has no distance; it has a box.
The objects of one category have, in the training crops, a typical size for a given box
shape (a car seen from the side gives a wide box, from the front a square one), so
:class:`ObjectSizes` records the training boxes' size (``sqrt(h w)`` in crop pixels) by
aspect ratio, and :func:`crop_box` resizes the photo so that the box gets that size, then
crops and pads exactly as the preparation does (:func:`nemopose.data.crop.crop_geometry`
with the box's centre). The pose solver still optimises the distance, so the scale only
has to be close.

The sizes come from the prepared training set (:meth:`ObjectSizes.from_prepared`) and are
stored with the checkpoint (:mod:`nemopose.photo.calibration`), so a predictor finds them without
the data.

Boxes file (``--boxes``): a CSV with the header ``image,x0,y0,x1,y1`` (input-image pixels,
x right, y down, x1 and y1 the far edges), one row per object, several rows per image for
several objects; ``image`` is the path as given on the command line or its file name.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from ..data import annotation, layout
from .. import constants
from ..data.crop import CropError, CropGeometry, apply_crop, crop_geometry
from ..errors import DataNotFound, UsageError

BOX_COLUMNS = ("image", "x0", "y0", "x1", "y1")
MAX_ORIGINS = 2000      # training objects whose origin offsets are kept (evenly spaced)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in an image's pixels: x0 < x1 (columns), y0 < y1 (rows)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        values = (self.x0, self.y0, self.x1, self.y1)
        if not all(math.isfinite(v) for v in values):
            raise UsageError(f"box {values} has a non-finite coordinate")
        if not (self.x1 > self.x0 and self.y1 > self.y0):
            raise UsageError(f"box {values} is empty: it needs x0 < x1 and y0 < y1")

    @classmethod
    def of(cls, value: "Box | Sequence[float]") -> "Box":
        """A box from a :class:`Box` or a sequence ``(x0, y0, x1, y1)``."""
        if isinstance(value, Box):
            return value
        values = [float(v) for v in value]
        if len(values) != 4:
            raise UsageError(f"a box is (x0, y0, x1, y1), got {list(value)}")
        return cls(*values)

    @classmethod
    def whole(cls, image_hw: tuple[int, int]) -> "Box":
        return cls(0.0, 0.0, float(image_hw[1]), float(image_hw[0]))

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def as_tuple(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0, self.x1, self.y1

    def overlaps(self, image_hw: tuple[int, int]) -> bool:
        """Whether the box has pixels inside an image of shape (H, W)."""
        return self.x1 > 0 and self.y1 > 0 and self.x0 < image_hw[1] and self.y0 < image_hw[0]


def read_boxes_csv(path: str | os.PathLike) -> dict[str, list[Box]]:
    """The boxes of a ``--boxes`` CSV, by image (in file order).

    Raises:
        UsageError naming the file (and the line) for a missing file, a wrong header, a
        value that is not a number or an empty box.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"boxes file {path} does not exist")
    boxes: dict[str, list[Box]] = {}
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if header[:5] != list(BOX_COLUMNS):
            raise UsageError(f"{path}: the header must be {','.join(BOX_COLUMNS)}, got {','.join(header) or 'nothing'}")
        for line, row in enumerate(reader, 2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 5:
                raise UsageError(f"{path}:{line}: expected 5 values (image,x0,y0,x1,y1), got {len(row)}")
            try:
                box = Box(*(float(v) for v in row[1:5]))
            except ValueError as exc:
                raise UsageError(f"{path}:{line}: {exc}") from None
            boxes.setdefault(row[0].strip(), []).append(box)
    return boxes


def boxes_for_images(table: dict[str, list[Box]], images: Sequence[str], source: str) -> list[list[Box]]:
    """The boxes of each image path, matched by the path as given or by its file name.

    Raises:
        UsageError when a row names no given image (a typo would otherwise drop an object).
    """
    out: list[list[Box]] = []
    used: set[str] = set()
    for image in images:
        for key in (str(image), Path(image).name):
            if key in table:
                out.append(table[key])
                used.add(key)
                break
        else:
            out.append([])
    unused = sorted(set(table) - used)
    if unused:
        raise UsageError(f"{source}: rows for images that were not given: {', '.join(unused[:5])}"
                         f"{' ...' if len(unused) > 5 else ''}")
    return out


# ----------------------------------------------------------------------------- object sizes


@dataclass(frozen=True)
class ObjectSizes:
    """How large the category's objects are in the training crops, by box shape, and where
    their origin projects relative to their box, by viewpoint.

    Attributes:
        log_aspect: increasing bin centres of ``log(width / height)`` of the training boxes.
        size: the median ``sqrt(width * height)`` (crop pixels) of the boxes in each bin.
        image_scale: the crops' scale (1 = PASCAL3D+).
        count: how many training boxes were summarised.
        origins: per training object (azimuth, elevation, dx, dy): its origin's offset from
            its box centre over ``sqrt(w h)`` (the projected origin: the annotation's
            principal point).
    """

    log_aspect: tuple[float, ...]
    size: tuple[float, ...]
    image_scale: float
    count: int
    origins: tuple[tuple[float, float, float, float], ...] = ()

    def origin_offset(self, azimuth: float, elevation: float, box: Box, k: int = 7) -> tuple[float, float]:
        """Where an object seen at (azimuth, elevation) has its origin relative to its box's
        centre, (x, y) pixels of the box's image: the median over the ``k`` training objects
        of the nearest viewpoints (wrapped azimuth difference + 2 x elevation difference,
        radians) of their offset over their box size, times this box's size; (0, 0), the
        box's centre, without training origins."""
        if not self.origins:
            return 0.0, 0.0
        table = np.asarray(self.origins)
        distance = np.abs(np.angle(np.exp(1j * (table[:, 0] - azimuth)))) + 2 * np.abs(table[:, 1] - elevation)
        nearest = np.argsort(distance, kind="stable")[:k]
        dx, dy = np.median(table[nearest, 2:], axis=0)
        size = math.sqrt(box.width * box.height)
        return float(dx * size), float(dy * size)

    def size_for(self, aspect: float) -> float:
        """The training size of a box of aspect ``width / height`` (linear in the log
        aspect between bins, the end bins' value outside)."""
        return float(np.interp(math.log(aspect), self.log_aspect, self.size))

    def scale_for(self, box: Box) -> float:
        """Crop pixels per input pixel that give ``box`` its training size."""
        return self.size_for(box.width / box.height) / math.sqrt(box.width * box.height)

    @classmethod
    def from_boxes(cls, heights: Iterable[float], widths: Iterable[float], image_scale: float,
                   bins: int = 12, origins: Iterable[Sequence[float]] = ()) -> "ObjectSizes":
        """Summarise training boxes (crop pixels) in up to ``bins`` bins of equal count;
        ``origins``: per object (azimuth, elevation, dx, dy), the origin's offset from the
        box centre over ``sqrt(w h)`` (at most :data:`MAX_ORIGINS` kept, evenly spaced)."""
        h, w = np.asarray(list(heights), float), np.asarray(list(widths), float)
        keep = (h > 0) & (w > 0)
        h, w = h[keep], w[keep]
        if h.size == 0:
            raise ValueError("no training boxes to summarise")
        aspect = np.log(w / h)
        order = np.argsort(aspect, kind="stable")
        groups = [g for g in np.array_split(order, min(bins, max(1, h.size // 5))) if g.size]
        centres = [float(np.median(aspect[g])) for g in groups]
        sizes = [float(np.median(np.sqrt(h[g] * w[g]))) for g in groups]
        # equal aspects in neighbouring bins (many identical boxes): keep one, np.interp needs order
        out_a, out_s = [centres[0]], [sizes[0]]
        for a, s in zip(centres[1:], sizes[1:]):
            if a > out_a[-1] + 1e-9:
                out_a.append(a)
                out_s.append(s)
        kept = list(origins)
        kept = [kept[i] for i in np.linspace(0, len(kept) - 1, min(len(kept), MAX_ORIGINS)).astype(int)] if kept else []
        return cls(tuple(round(a, 5) for a in out_a), tuple(round(s, 3) for s in out_s), float(image_scale),
                   int(h.size), tuple(tuple(round(float(v), 5) for v in o) for o in kept))

    @classmethod
    def from_prepared(cls, dataroot: str | os.PathLike, category: str, image_scale: float) -> "ObjectSizes":
        """From the prepared training split of ``category``: each annotation's object box
        (``bbox``, original image pixels) times its ``resize_rate``."""
        lay = layout.split_layout(dataroot, "train", category)
        paths = sorted(lay.annotations.glob("*.npz")) if lay.annotations.is_dir() else []
        if not paths:
            raise DataNotFound(f"no prepared training annotations of {category} in {lay.annotations}: the object "
                               "size for boxes comes from them (run PrepareData.sh, or use a checkpoint whose "
                               ".photo.json has it)")
        heights, widths, origins = [], [], []
        for path in paths:
            anno = annotation.load(path)
            x0, y0, x1, y1 = (float(v) for v in np.asarray(anno["bbox"]).reshape(-1)[:4])
            rate = float(np.asarray(anno["resize_rate"]).reshape(-1)[0])
            heights.append((y1 - y0) * rate)
            widths.append((x1 - x0) * rate)
            px, py = (float(v) for v in np.asarray(anno["principal"]).reshape(-1)[:2])
            size = math.sqrt(max((x1 - x0) * (y1 - y0), 1e-9))
            origins.append((float(anno["azimuth"]), float(anno["elevation"]),
                            (px - (x0 + x1) / 2) / size, (py - (y0 + y1) / 2) / size))
        return cls.from_boxes(heights, widths, image_scale, origins=origins)

    def to_json(self) -> dict[str, Any]:
        return {"log_aspect": list(self.log_aspect), "size": list(self.size), "image_scale": self.image_scale,
                "count": self.count, "origins (azimuth, elevation, dx, dy)": [list(o) for o in self.origins]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ObjectSizes":
        origins = data.get("origins (azimuth, elevation, dx, dy)", [])
        return cls(tuple(float(v) for v in data["log_aspect"]), tuple(float(v) for v in data["size"]),
                   float(data["image_scale"]), int(data["count"]), tuple(tuple(float(v) for v in o) for o in origins))


# ----------------------------------------------------------------------------- the crop


@dataclass(frozen=True)
class Placement:
    """An input image on the network's canvas.

    Attributes:
        canvas: (H, W, 3) uint8, H and W multiples of the stride.
        scale: canvas pixels per input pixel.
        offset: (x, y) canvas centre minus the input image's centre, in canvas pixels.
    """

    canvas: np.ndarray
    scale: float
    offset: tuple[float, float]


def crop_box(image: np.ndarray, box: Box, rate: float, crop_hw: tuple[int, int]) -> Placement:
    """The crop of ``box`` at ``rate`` (crop pixels per input pixel), the category's crop
    size, centred on the box, zero-padded where it leaves the image: the preparation's crop
    (:func:`nemopose.data.crop.crop_geometry`, ``center="bbox"``).

    Raises:
        UsageError when the box lies outside the image.
    """
    try:
        geo = crop_geometry(np.array(box.as_tuple()), np.zeros(2), 0.0, image.shape[:2], crop_hw,
                            center="bbox", resize_rate=rate)
    except CropError as exc:
        raise UsageError(f"box {box.as_tuple()}: {exc}") from None
    return crop_placement(image, geo)


def crop_placement(image: np.ndarray, geo: CropGeometry) -> Placement:
    """The crop of :func:`nemopose.data.crop.apply_crop` as a :class:`Placement`."""
    canvas = apply_crop(image, geo)
    (top, _), (left, _), _ = (tuple(int(v) for v in pair) for pair in geo.padding)
    wy0, _, wx0, _ = (int(v) for v in geo.box[:4])
    res_h, res_w = geo.resized_shape
    # the input image's centre on the canvas: resized centre + padding - window origin
    cx, cy = res_w / 2 + left - wx0, res_h / 2 + top - wy0
    return Placement(canvas, res_w / image.shape[1], (canvas.shape[1] / 2 - cx, canvas.shape[0] / 2 - cy))


def place_image(image: np.ndarray, size: tuple[int, int], scale: float | None = None, pad: str = "zero") -> Placement:
    """Put a whole image on a zero canvas for the network.

    ``scale`` None: the largest scale that fits the image into ``size`` (the category's crop,
    aspect kept), centred. A given ``scale``: the image resized by it and centred on a canvas
    of at least ``size``, grown to hold all of it (rounded up to the stride), so nothing is
    cut whatever the object's place. ``pad``: "zero" (black, as the preparation pads) or
    "edge" (the image's border pixels repeated, so that its outline does not become a
    silhouette for the mesh to fit).
    """
    h, w = size
    ih, iw = image.shape[:2]
    scale = min(h / ih, w / iw) if scale is None else float(scale)
    if not scale > 0:
        raise UsageError(f"scale must be > 0, got {scale}")
    nh, nw = max(1, round(ih * scale)), max(1, round(iw * scale))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR)) if (nh, nw) != (ih, iw) else image
    step = constants.DOWNSAMPLE_RATE
    ch, cw = max(h, -(-nh // step) * step), max(w, -(-nw // step) * step)
    top, left = (ch - nh) // 2, (cw - nw) // 2
    if pad == "edge":
        canvas = np.pad(resized, ((top, ch - nh - top), (left, cw - nw - left), (0, 0)), mode="edge")
    elif pad == "zero":
        canvas = np.zeros((ch, cw, 3), dtype=np.uint8)
        canvas[top:top + nh, left:left + nw] = resized
    else:
        raise ValueError(f"pad must be 'zero' or 'edge', got {pad!r}")
    return Placement(canvas, scale, (cw / 2 - (left + nw / 2), ch / 2 - (top + nh / 2)))
