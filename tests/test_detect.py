"""The COCO object detector (nemopose.photo.detect) and its weights (nemopose.fetch.weights):
the PASCAL3D+ -> COCO mapping against torchvision's list, a hash-checked download from a
loopback mirror, a small random detector that returns only the asked class, the real
weights' layout, and the offline and unknown-name errors. No real weights are downloaded."""

from __future__ import annotations

import functools
import hashlib
import io
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models._api
from torchvision.models import detection

from nemopose.constants import CATEGORIES
from nemopose.errors import NemoPoseError, UsageError
from nemopose.fetch import weights as W
from nemopose.photo import detect as D
from test_download import loopback_server

COCO = detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1.meta["categories"]
CAR, TRUCK = 3, 8
REAL_FILE = "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth"

# The small detector: many detections per image, so that torchvision's cap never hides a class; small inputs.
tiny_builder = functools.partial(detection.fasterrcnn_mobilenet_v3_large_320_fpn, box_detections_per_img=1000,
                                 min_size=160, max_size=320)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A loopback HTTP server over tmp_path/mirror, with the torch hub cache in tmp_path/torch."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with loopback_server(tmp_path / "mirror") as state:
        yield state


@pytest.fixture(scope="module")
def tiny_weights() -> tuple[dict, bytes]:
    """A random mobilenet-320 Faster R-CNN's state dict (and its torch.save bytes) made to answer:
    its backbone's batch-norm statistics are those of a random picture (with the fresh 0/1 ones
    the features vanish and every box gets the same scores), its class scores vary with the box
    and favour trucks over cars, its box regression stays near the proposals."""
    torch.manual_seed(0)
    model = tiny_builder(weights=None, weights_backbone=None, num_classes=len(COCO))
    for module in model.backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None                               # running stats = this batch's
            module.reset_running_stats()
    model.backbone.train()
    predictor = model.roi_heads.box_predictor
    with torch.no_grad():
        model.backbone(torch.rand(1, 3, 160, 160))
        predictor.cls_score.weight.mul_(0.01)
        predictor.cls_score.bias.zero_()
        predictor.cls_score.bias[CAR] = 5.0
        predictor.cls_score.bias[TRUCK] = 5.5
        predictor.bbox_pred.weight.mul_(0.001)
        predictor.bbox_pred.bias.zero_()
    model.eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return model.state_dict(), buf.getvalue()


@pytest.fixture
def tiny(mirror, tiny_weights, monkeypatch) -> str:
    """Detector "tiny" in DETECTORS, its file ``tiny-<sha256 prefix>.pth`` on the mirror only."""
    data = tiny_weights[1]
    name = f"tiny-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (mirror.root / name).write_bytes(data)
    weights = types.SimpleNamespace(url=f"https://weights.invalid/models/{name}", meta={"categories": COCO})
    monkeypatch.setitem(D.DETECTORS, "tiny", D.DetectorSpec(tiny_builder, weights))
    return name


def images() -> list[np.ndarray]:
    gen = np.random.default_rng(0)
    return [gen.integers(0, 256, (160, 200, 3), dtype=np.uint8), gen.integers(0, 256, (200, 120, 3), dtype=np.uint8)]


def test_every_category_maps_to_its_coco_label():
    assert sorted(D.COCO_NAMES) == sorted(CATEGORIES)
    assert len(COCO) == 91 and COCO[0] == "__background__" and "N/A" in COCO
    labels = {c: D.coco_label(c, COCO) for c in CATEGORIES}
    assert labels == {"aeroplane": 5, "bicycle": 2, "boat": 9, "bottle": 44, "bus": 6, "car": 3, "chair": 62,
                      "diningtable": 67, "motorbike": 4, "sofa": 63, "train": 7, "tvmonitor": 72}
    assert all(COCO[labels[c]] == D.COCO_NAMES[c] for c in CATEGORIES)
    for spec in D.DETECTORS.values():                      # every supported model uses this list
        assert spec.weights.meta["categories"] == COCO
    assert D.DEFAULT_DETECTOR in D.DETECTORS and "fasterrcnn_mobilenet_v3_large_fpn" in D.DETECTORS
    with pytest.raises(UsageError, match="unknown category 'person'"):
        D.coco_label("person", COCO)
    with pytest.raises(UsageError, match="--boxes"):
        D.coco_label("car", ["__background__", "person"])


@pytest.mark.parametrize("name", ["fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn"])
def test_the_real_weights_layout_loads_into_the_built_model(name, monkeypatch):
    """torchvision builds a pretrained model with other norm layers (FrozenBatchNorm2d) than
    ``weights=None`` does; its state dict (the layout of the real file) must load strictly into
    :func:`build_detector`'s model and compute the same features."""
    built = D.build_detector(name).eval()
    state = built.state_dict()
    gen = torch.Generator().manual_seed(1)
    for key, value in state.items():            # not 0/1: a wrong eps or a missing layer would show
        if key.endswith("running_var"):
            value.copy_(torch.rand(value.shape, generator=gen) * 1.5 + 0.5)
        elif key.endswith("running_mean"):
            value.copy_(torch.randn(value.shape, generator=gen) * 0.1)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", lambda url, *a, **k: dict(state))
    spec = D.DETECTORS[name]
    pretrained = spec.builder(weights=spec.weights, progress=False).eval()   # as torchvision loads the file
    real_layout = pretrained.state_dict()
    if "mobilenet" in name:
        assert set(real_layout) != set(state)                                 # FrozenBatchNorm2d: no counters
    fresh = D.build_detector(name).eval()
    fresh.load_state_dict(real_layout)                                        # strict
    x = torch.rand(1, 3, 64, 96, generator=gen)
    with torch.no_grad():
        want, got = pretrained.backbone(x), fresh.backbone(x)
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5)


def test_a_file_failing_its_hash_is_refused_and_not_cached(mirror, tiny_weights):
    (mirror.root / REAL_FILE).write_bytes(tiny_weights[1])               # right name, other bytes
    cache = W.detector_weights_path().parent
    assert W.detector_weights_path() == Path(torch.hub.get_dir()) / "checkpoints" / REAL_FILE
    with pytest.raises(W.DetectorWeightsMissing) as info:
        D.ObjectDetector.load(mirror=mirror.url, progress=False)
    message = str(info.value)
    assert "hash" in message and f"{mirror.url}/{REAL_FILE}" in message
    assert str(cache / REAL_FILE) in message and "--boxes instead of --detect" in message
    assert len(mirror.requests_for(f"/{REAL_FILE}")) == 1
    assert not cache.exists() or list(cache.iterdir()) == []              # nothing left in the cache


def test_tiny_detector_is_downloaded_once_and_finds_only_the_asked_class(mirror, tiny, tiny_weights):
    detector = D.ObjectDetector.load("tiny", mirror=mirror.url, progress=False)
    assert (Path(torch.hub.get_dir()) / "checkpoints" / tiny).is_file()
    assert len(mirror.requests) == 1
    again = D.ObjectDetector.load("tiny", mirror=mirror.url, progress=False)    # from the cache
    assert len(mirror.requests) == 1
    assert D.ObjectDetector.load("tiny", download="no").categories == tuple(COCO)
    for key, value in tiny_weights[0].items():
        torch.testing.assert_close(again.model.state_dict()[key], value)

    pictures = images()
    found = detector.detect(pictures, "car", min_score=0.0)
    assert len(found) == 2
    # what the model says at the same threshold (one batch, same padding): trucks score above cars
    detector.model.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        raw = detector.model([torch.from_numpy(p).permute(2, 0, 1).float() / 255 for p in pictures])
    for picture, dets, out in zip(pictures, found, raw):
        height, width = picture.shape[:2]
        cars = out["scores"][out["labels"] == CAR]
        assert (out["labels"] == TRUCK).any() and out["scores"][out["labels"] == TRUCK].max() > cars.max()
        assert len(dets) == len(cars) > 0
        assert all(isinstance(d, D.Detection) and isinstance(d.score, float) and len(d.box) == 4 for d in dets)
        scores = [d.score for d in dets]
        assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
        np.testing.assert_allclose(scores, sorted(cars.tolist(), reverse=True), rtol=1e-5)
        for x0, y0, x1, y1 in (d.box for d in dets):
            assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height

    # a threshold keeps exactly the boxes above it
    threshold = float(np.median([d.score for d in found[0]]))
    above = detector.detect(pictures, "car", min_score=threshold)
    assert above[0] and all(d.score >= threshold for dets in above for d in dets)
    for got, dets in zip(above, found):
        want = [d for d in dets if d.score >= threshold]
        assert len(got) == len(want) and set(got) == set(want)
    assert detector.detect(pictures, "car", min_score=0.9, batch_size=1) == [[], []]
    assert detector.detect([], "car") == []


def test_a_mirror_folder_and_download_no(mirror, tiny):
    with pytest.raises(W.DetectorWeightsMissing) as info:
        W.fetch_detector_weights("tiny", download="no")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / tiny
    assert str(cached) in str(info.value) and f"put https://weights.invalid/models/{tiny} there" in str(info.value)
    assert "--boxes" in str(info.value) and isinstance(info.value, FileNotFoundError)
    assert W.fetch_detector_weights("tiny", mirror=str(mirror.root), progress=False) == cached   # a plain folder
    assert W.fetch_detector_weights("tiny", download="no") == cached and mirror.requests == []


def test_unknown_names_and_bad_inputs_are_clear_errors(tiny_weights):
    for call in (lambda: D.ObjectDetector.load("yolo"), lambda: W.fetch_detector_weights("yolo")):
        with pytest.raises(UsageError) as info:
            call()
        assert "unknown detector 'yolo'" in str(info.value)
        assert all(name in str(info.value) for name in ("fasterrcnn_resnet50_fpn_v2",
                                                        "fasterrcnn_mobilenet_v3_large_fpn"))
    with pytest.raises(UsageError, match="download must be one of"):
        W.fetch_detector_weights(download="maybe")
    model = tiny_builder(weights=None, weights_backbone=None, num_classes=len(COCO))
    detector = D.ObjectDetector(model, COCO)
    assert not detector.model.training
    for bad in (np.zeros((20, 30), np.uint8), np.zeros((20, 30, 3), np.float32), np.zeros((0, 30, 3), np.uint8)):
        with pytest.raises(UsageError, match=r"image 1: expected an \(H, W, 3\) uint8"):
            detector.detect([images()[0], bad], "car")
    with pytest.raises(UsageError, match="unknown category"):
        detector.detect(images(), "person")
    with pytest.raises(NemoPoseError, match="min_score"):
        detector.detect(images(), "car", min_score=1.5)
