"""Finding the object in a photo: a torchvision COCO detector, asked for one PASCAL3D+ category.

A pose needs the object roughly centred at the scale of the training crops; in a photo
someone must first say where it is. ``--boxes`` gives the boxes by hand; ``--detect`` asks
a detector trained on COCO, whose 80 classes include all 12 PASCAL3D+ categories::

    from nemopose.photo.detect import ObjectDetector
    detector = ObjectDetector.load()                        # fasterrcnn_resnet50_fpn_v2, cached or downloaded
    found = detector.detect([uint8_hwc_array, ...], "car")  # per image: [Detection(box, score)], best first
    found[0][0].box                                         # (x0, y0, x1, y1) in that image's pixels

The category is translated to its COCO class by :data:`COCO_NAMES` (aeroplane -> airplane,
diningtable -> dining table, motorbike -> motorcycle, sofa -> couch, tvmonitor -> tv; the
other seven keep their names), and the class to the model's label id by its position in the
weights' ``meta["categories"]`` (torchvision's 91-entry list with ``N/A`` gaps: car is 3,
airplane 5, couch 63, tv 72), never by a hand-written table.

:data:`DETECTORS` lists the torchvision models that can be used (``--detector``):
``fasterrcnn_resnet50_fpn_v2`` (the default, the most accurate: 46.7 box mAP on COCO val2017)
and ``fasterrcnn_mobilenet_v3_large_fpn`` (32.8 mAP, several times faster on a CPU). Their
weights come from :func:`nemopose.fetch.weights.fetch_detector_weights` (the torch hub cache,
a hash-checked download or a mirror); offline without them the error says where to put the
file, or to give ``--boxes`` instead.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torchvision.models import detection

from .. import constants
from ..errors import UsageError
from ..fetch.weights import DetectorWeightsMissing, fetch_detector_weights

log = logging.getLogger(__name__)

# PASCAL3D+ category -> the COCO class that holds it (a name in the weights' meta["categories"]).
COCO_NAMES: dict[str, str] = {
    "aeroplane": "airplane",
    "bicycle": "bicycle",
    "boat": "boat",
    "bottle": "bottle",
    "bus": "bus",
    "car": "car",
    "chair": "chair",
    "diningtable": "dining table",
    "motorbike": "motorcycle",
    "sofa": "couch",
    "train": "train",
    "tvmonitor": "tv",
}


class DetectorSpec(NamedTuple):
    """A usable detector: its torchvision builder (called with ``weights=None,
    weights_backbone=None, num_classes=``) and its weights (anything with ``.url`` and
    ``.meta["categories"]``, normally a torchvision weights enum member)."""

    builder: Callable[..., torch.nn.Module]
    weights: Any


DEFAULT_DETECTOR = "fasterrcnn_resnet50_fpn_v2"

# name -> (builder, COCO weights). Tests may add entries (monkeypatch.setitem).
DETECTORS: dict[str, DetectorSpec] = {
    "fasterrcnn_resnet50_fpn_v2": DetectorSpec(detection.fasterrcnn_resnet50_fpn_v2,
                                               detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1),
    "fasterrcnn_mobilenet_v3_large_fpn": DetectorSpec(detection.fasterrcnn_mobilenet_v3_large_fpn,
                                                      detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1),
}


@dataclass(frozen=True)
class Detection:
    """One object found in an image."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the input image's pixels
    score: float


def detector_spec(name: str) -> DetectorSpec:
    """The :data:`DETECTORS` entry of ``name``.

    Raises:
        UsageError naming the known detectors when ``name`` is not one.
    """
    try:
        return DETECTORS[name]
    except KeyError:
        raise UsageError(f"unknown detector {name!r}; expected one of {', '.join(DETECTORS)}") from None


def coco_label(category: str, categories: Sequence[str]) -> int:
    """The label id of PASCAL3D+ ``category``'s COCO class: its index in ``categories`` (a
    detector's category list, ``meta["categories"]`` of its weights).

    Raises:
        UsageError for a category that is not PASCAL3D+'s, or whose class the list lacks.
    """
    name = COCO_NAMES[constants.check_category(category)]
    try:
        return list(categories).index(name)
    except ValueError:
        raise UsageError(f"the detector's classes have no {name!r} (for {category}); it cannot find "
                         "that category, give its boxes with --boxes instead") from None


def build_detector(name: str) -> torch.nn.Module:
    """Detector ``name`` with random weights and as many classes as its COCO weights have
    (nothing is downloaded; :meth:`ObjectDetector.load` fills it)."""
    spec = detector_spec(name)
    return spec.builder(weights=None, weights_backbone=None, num_classes=len(spec.weights.meta["categories"]))


class ObjectDetector:
    """A torchvision detection model that finds one PASCAL3D+ category at a time.

    Args:
        model: a torchvision detection model (takes a list of float CHW images in [0, 1],
            returns per image a dict of ``boxes``, ``labels``, ``scores``).
        categories: the model's class names, index = label id (COCO: ``meta["categories"]``).
        device: where the model runs; it is moved there and put in eval mode.
    """

    def __init__(self, model: torch.nn.Module, categories: Sequence[str], device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.categories = tuple(categories)

    @classmethod
    def load(cls, name: str = DEFAULT_DETECTOR, device: str | torch.device = "cpu", download: str = "auto",
             mirror: str | None = None, progress: bool = True) -> ObjectDetector:
        """Detector ``name`` of :data:`DETECTORS` with its COCO weights.

        Args:
            name: the detector (``fasterrcnn_resnet50_fpn_v2``, ``fasterrcnn_mobilenet_v3_large_fpn``).
            device: where it runs.
            download, mirror, progress: as in :func:`nemopose.fetch.weights.fetch_detector_weights`.

        Returns:
            The detector, in eval mode on ``device``.

        Raises:
            UsageError for an unknown name; DetectorWeightsMissing when the weights cannot be
            had offline, or when the cached file does not hold this detector's weights.
        """
        spec = detector_spec(name)
        path = fetch_detector_weights(name, download=download, mirror=mirror, progress=progress)
        model = build_detector(name)
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:  # a file put in the cache by hand: unreadable, or another model's
            raise DetectorWeightsMissing(
                f"{path} does not hold the COCO weights of the {name} detector ({type(exc).__name__}: "
                f"{str(exc)[:300]}); delete it and run again to download {spec.weights.url}, "
                "or give the objects' boxes with --boxes instead of --detect") from exc
        log.info("detector %s loaded from %s", name, path)
        return cls(model, spec.weights.meta["categories"], device)

    def detect(self, images: Sequence[np.ndarray], category: str, min_score: float = 0.5,
               batch_size: int = 4) -> list[list[Detection]]:
        """The boxes of ``category`` in each image.

        Args:
            images: (H, W, 3) uint8 RGB arrays, of any sizes.
            category: a PASCAL3D+ category (its COCO class is looked for, :data:`COCO_NAMES`).
            min_score: keep boxes scoring at least this (the model's own score threshold is set
                to it for the call, so values below torchvision's 0.05 work too, and fewer boxes
                compete for the model's 100 detections per image).
            batch_size: images per forward pass (a batch is padded to its largest image, which
                can move scores and boxes a little).

        Returns:
            Per image, its detections of that class, highest score first (an empty list when
            none reaches ``min_score``); boxes are clipped to the image.

        Raises:
            UsageError for an unknown category, a bad ``min_score`` or ``batch_size``, or an
            image that is not (H, W, 3) uint8.
        """
        label = coco_label(category, self.categories)
        if not 0.0 <= min_score <= 1.0:
            raise UsageError(f"min_score must be in [0, 1], got {min_score}")
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {batch_size}")
        arrays = [_check_image(image, i) for i, image in enumerate(images)]
        found: list[list[Detection]] = []
        # the model keeps scores strictly above its threshold: the float32 just below min_score keeps min_score
        below = float(np.nextafter(np.float32(min_score), np.float32(-np.inf)))
        with torch.inference_mode(), _score_threshold(self.model, below):
            for start in range(0, len(arrays), batch_size):
                batch = arrays[start:start + batch_size]
                tensors = [torch.from_numpy(a).to(self.device).permute(2, 0, 1).float().div_(255.0) for a in batch]
                for array, result in zip(batch, self.model(tensors)):
                    found.append(_detections(result, label, min_score, width=array.shape[1], height=array.shape[0]))
        return found


def _check_image(image: np.ndarray, index: int) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or 0 in array.shape:
        raise UsageError(f"image {index}: expected an (H, W, 3) uint8 RGB array, got shape {array.shape} "
                         f"dtype {array.dtype}")
    return np.ascontiguousarray(array)


def _detections(result: dict[str, torch.Tensor], label: int, min_score: float, *, width: int,
                height: int) -> list[Detection]:
    """The ``label`` boxes of one model output scoring at least ``min_score``, best first."""
    scores = result["scores"].float().cpu()
    keep = (result["labels"].cpu() == label) & (scores >= min_score)
    boxes, scores = result["boxes"].float().cpu()[keep], scores[keep]
    order = torch.argsort(scores, descending=True, stable=True)
    boxes, scores = boxes[order], scores[order]
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)    # torchvision clips before scaling back;
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)   # rounding could leave a hair outside
    return [Detection(box=tuple(box), score=s) for box, s in zip(boxes.tolist(), scores.tolist())]


@contextlib.contextmanager
def _score_threshold(model: torch.nn.Module, threshold: float) -> Iterator[None]:
    """Set the detector's own score threshold (``roi_heads.score_thresh`` for Faster R-CNN,
    ``score_thresh`` for RetinaNet, FCOS, SSD) for the duration of the block."""
    holders = [h for h in (getattr(model, "roi_heads", None), model) if h is not None and hasattr(h, "score_thresh")]
    saved = [h.score_thresh for h in holders]
    for h in holders:
        h.score_thresh = threshold
    try:
        yield
    finally:
        for h, value in zip(holders, saved):
            h.score_thresh = value
