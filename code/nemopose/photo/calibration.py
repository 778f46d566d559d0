"""The photo calibration of a checkpoint: object sizes and the presence threshold
(METHOD.md §16.3), stored next to the checkpoint as ``<checkpoint>.photo.json``.

Made once per checkpoint from the prepared data of the category, when a predictor first
loads it (:meth:`nemopose.predict.PosePredictor.from_checkpoint`) or with ``python -m
nemopose.predict --calibrate``:

- ``object_sizes``: the training boxes' size by shape (:class:`ObjectSizes`), so boxes are
  cropped at the training scale without the data;
- positives: the presence scores of the validation crops, each solved from its annotated
  object box, the way a photo with a box is solved;
- negatives: images without the object, solved as whole photos (scale search and
  translation, the most freedom the predictor has): uniform noise, smooth noise, flat
  colours, and validation crops cut into 16-pixel blocks and shuffled (their colours and
  textures without the object's shape);
- ``threshold``: halfway between the highest negative score and the 5th percentile of the
  positives when the two are apart; otherwise the threshold with the best balanced
  accuracy (mean of the rates of right yes and right no).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data import annotation, layout
from ..data.pascal3d import load_image_array
from ..errors import DataNotFound, UsageError
from ..utils import atomic_write_json
from .boxes import Box, ObjectSizes

if TYPE_CHECKING:
    from ..predict import PosePredictor

log = logging.getLogger("nemopose.photo")

FILE_SUFFIX = ".photo.json"
POSITIVE_QUANTILE = 5          # percentile of the positives the threshold keeps clear of
NEGATIVE_KINDS = ("noise", "smooth noise", "flat", "shuffled blocks")


@dataclass(frozen=True)
class PhotoCalibration:
    """What the photo predictor needs beyond the checkpoint.

    Attributes:
        object_sizes: :class:`ObjectSizes` of the training set.
        threshold: presence scores >= it answer "object found" (None: not calibrated).
        positives: presence scores of the validation crops.
        negatives: presence scores of the object-free images, by kind.
    """

    object_sizes: ObjectSizes
    threshold: float | None = None
    positives: tuple[float, ...] = ()
    negatives: dict[str, tuple[float, ...]] = field(default_factory=dict)

    @staticmethod
    def path_for(checkpoint: str | os.PathLike) -> Path:
        return Path(str(checkpoint) + FILE_SUFFIX)

    @classmethod
    def find(cls, checkpoint: str | os.PathLike) -> "PhotoCalibration | None":
        """The calibration stored with ``checkpoint``, or None."""
        path = cls.path_for(checkpoint)
        return cls.load(path) if path.is_file() else None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PhotoCalibration":
        import json

        try:
            data = json.loads(Path(path).read_text())
            return cls(ObjectSizes.from_json(data["object_sizes"]), data.get("threshold"),
                       tuple(data.get("positives", ())), {k: tuple(v) for k, v in data.get("negatives", {}).items()})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"photo calibration {path} is unreadable ({type(exc).__name__}: {exc}); delete it and "
                             "run python -m nemopose.predict --calibrate") from None

    def save(self, path: str | os.PathLike, **extra: Any) -> None:
        atomic_write_json(path, {
            "threshold": self.threshold,
            "rule": "object_found = presence score >= threshold; score = mean over the covered feature-map cells "
                    "of s_o - s_c at the solved pose (METHOD.md 16.3)",
            **extra,
            "object_sizes": self.object_sizes.to_json(),
            "positives": [round(v, 5) for v in self.positives],
            "negatives": {k: [round(v, 5) for v in vs] for k, vs in self.negatives.items()},
        })

    def summary(self) -> str:
        """Threshold, and the scores of the positives and of each kind of negative."""
        if self.threshold is None:
            return "not calibrated"
        pos = np.asarray(self.positives)
        lines = [f"threshold {self.threshold:.4f}",
                 f"val crops ({pos.size}): score min {pos.min():.3f}, 5th percentile "
                 f"{np.percentile(pos, POSITIVE_QUANTILE):.3f}, median {np.median(pos):.3f}; "
                 f"yes {np.mean(pos >= self.threshold):.0%}"]
        for kind, values in self.negatives.items():
            v = np.asarray(values)
            lines.append(f"{kind} ({v.size}): score max {v.max():.3f}, median {np.median(v):.3f}; "
                         f"no {np.mean(v < self.threshold):.0%}")
        return "\n".join(lines)


def choose_threshold(positives, negatives) -> float:
    """The yes/no threshold (module docstring)."""
    pos, neg = np.sort(np.asarray(positives, float)), np.sort(np.asarray(negatives, float))
    if pos.size == 0 or neg.size == 0:
        raise ValueError("calibration needs positive and negative scores")
    low = float(np.percentile(pos, POSITIVE_QUANTILE))
    if neg[-1] < low:
        return (neg[-1] + low) / 2
    values = np.concatenate([pos, neg])
    candidates = np.unique(values)
    candidates = (candidates[1:] + candidates[:-1]) / 2 if candidates.size > 1 else candidates
    balanced = [(np.mean(pos >= t) + np.mean(neg < t)) / 2 for t in candidates]
    best = np.flatnonzero(np.isclose(balanced, max(balanced)))
    return float(candidates[best[len(best) // 2]])


def negative_images(crops: list[np.ndarray], per_kind: int, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Object-free images the size of the crops (:data:`NEGATIVE_KINDS`)."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {k: [] for k in NEGATIVE_KINDS}
    block = 16
    for k in range(per_kind):
        crop = crops[k % len(crops)]
        h, w = crop.shape[:2]
        out["noise"].append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        rough = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        out["smooth noise"].append(np.asarray(rough.filter(ImageFilter.GaussianBlur(radius=4 + 2 * k))))
        colour = crop.reshape(-1, 3).mean(0) if k % 2 == 0 else rng.integers(0, 256, 3)
        out["flat"].append(np.broadcast_to(np.asarray(colour, np.uint8), (h, w, 3)).copy())
        bh, bw = h // block, w // block
        tiles = (crop[:bh * block, :bw * block].reshape(bh, block, bw, block, 3).swapaxes(1, 2)
                 .reshape(-1, block, block, 3))
        tiles = tiles[rng.permutation(len(tiles))].reshape(bh, bw, block, block, 3).swapaxes(1, 2)
        out["shuffled blocks"].append(np.ascontiguousarray(tiles.reshape(bh * block, bw * block, 3)))
    return out


def own_colour(image: np.ndarray, box: Box) -> np.ndarray:
    """The image flat in the median colour of ``box``'s pixels (for tests: the hardest flat
    image for a network trained on flat-coloured synthetic objects)."""
    x0, y0 = max(0, int(box.x0)), max(0, int(box.y0))
    x1, y1 = max(x0 + 1, int(math.ceil(box.x1))), max(y0 + 1, int(math.ceil(box.y1)))
    colour = np.median(image[y0:y1, x0:x1].reshape(-1, 3), axis=0)
    return np.broadcast_to(colour.astype(np.uint8), image.shape).copy()


def calibrate(predictor: "PosePredictor", dataroot: str | os.PathLike, max_images: int = 40,
              negatives_per_kind: int = 4, seed: int = 0) -> PhotoCalibration:
    """Calibrate ``predictor`` on the prepared data of its category (module docstring) and
    set it as the predictor's calibration.

    Raises:
        DataNotFound when the category's training or validation crops are not prepared.
    """
    category = predictor.category
    sizes = ObjectSizes.from_prepared(dataroot, category, predictor.image_scale)
    predictor.calibration = PhotoCalibration(sizes)
    lay = layout.split_layout(dataroot, "val", category)
    names = sorted(p.stem for p in lay.annotations.glob("*.npz"))[:max_images] if lay.annotations.is_dir() else []
    if not names:
        raise DataNotFound(f"no prepared validation crops of {category} in {lay.annotations}: the presence "
                           "threshold is calibrated on them (run PrepareData.sh)")
    crops, boxes = [], []
    for name in names:
        anno = annotation.load(lay.annotation_path(name))
        y0, y1, x0, x1 = (float(v) for v in np.asarray(anno["box_obj"])[:4])
        crops.append(load_image_array(lay.image_path(name)))
        boxes.append([Box(x0, y0, x1, y1)])
    log.info("photo calibration of %s: %d validation crops", category, len(crops))
    positives = [p.score for p in predictor.predict(crops, boxes=boxes)]
    negatives = {}
    for kind, images in negative_images(crops, negatives_per_kind, seed).items():
        log.info("photo calibration of %s: %d %s images", category, len(images), kind)
        negatives[kind] = tuple(p.score for p in predictor.predict(images))

    threshold = choose_threshold(positives, [v for vs in negatives.values() for v in vs])
    calibration = PhotoCalibration(sizes, threshold, tuple(positives), negatives)
    predictor.calibration = calibration
    return calibration


def calibration_record(checkpoint: str | os.PathLike, dataroot: str | os.PathLike) -> dict[str, Any]:
    """Where a calibration came from (stored in its file)."""
    return {"checkpoint": str(Path(checkpoint).name), "dataroot": str(dataroot),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
