"""The unlabeled-image predictor recovers known poses: a car trained with the demo preset on
the synthetic PASCAL3D+ (SYNTHETIC data), then PosePredictor on val images it never saw:
the prepared crops, and the uncropped release images (only rescaled, so the object sits
wherever the photographer put it: off the centre), where the principal-point translation
has to find it."""

import numpy as np
import pytest
from PIL import Image

from nemopose import evaluate
from nemopose.data import annotation, layout
from nemopose.data.mat_record import load_record
from nemopose.data.pascal3d import Pascal3DRelease, load_image_array
from nemopose.experiment import Experiment
from nemopose.predict import PosePredictor, place_image

pytestmark = pytest.mark.slow
N_IMAGES = 40
ANGLES = ("azimuth", "elevation", "theta")


@pytest.fixture(scope="module")
def demo_predictor(demo_car):
    """The session's demo-trained car (conftest.demo_car) as a PosePredictor, with the val
    split's layout and its first N_IMAGES names."""
    dataroot, exproot = demo_car
    predictor = PosePredictor.from_checkpoint(Experiment(exproot, "single").final_checkpoint("car"), "car",
                                              dataroot=dataroot, calibrate="no")     # writes nothing there
    lay = layout.split_layout(dataroot, "val", "car")
    names = layout.read_list(lay.mesh_list_path("single", 1))[:N_IMAGES]
    return dataroot, lay, names, predictor


def errors_deg(predictions, truths) -> np.ndarray:
    return evaluate.rotation_errors_deg({k: [getattr(p, k) for p in predictions] for k in ANGLES},
                                        {k: [t[k] for t in truths] for k in ANGLES})


def test_predictor_recovers_poses_on_val_crops(demo_predictor):
    _, lay, names, predictor = demo_predictor
    assert predictor.image_scale == 0.5                         # read from the checkpoint
    truths = [annotation.pose(annotation.load(lay.annotation_path(n))) for n in names]
    # file paths, PIL images and arrays are the same input
    inputs = [str(lay.image_path(n)) if i % 3 == 0 else Image.open(lay.image_path(n)) if i % 3 == 1
              else np.asarray(Image.open(lay.image_path(n)).convert("RGB")) for i, n in enumerate(names)]
    boxes = [[(b[2], b[0], b[3], b[1])] for b in (annotation.load(lay.annotation_path(n))["box_obj"] for n in names)]
    predictions = predictor.predict(inputs, boxes=boxes)          # each crop with its object's box
    err = errors_deg(predictions, truths)
    assert np.mean(err < 30) >= 0.9, np.round(err, 1)
    # different images, different poses (the broken predictor returned one pose for all)
    assert np.ptp([p.azimuth for p in predictions]) > 2.0
    # crops are centred on the object: the translation stays small
    assert np.median(np.abs([p.shift_x for p in predictions])) < 16
    # distance: of a focal-3000 camera on the given image; a crop is the original image
    # magnified by its resize rate r, so that camera sees the object at distance d / r
    rates = np.array([annotation.resize_rate(annotation.load(lay.annotation_path(n))) for n in names])
    rel = np.array([p.distance * r / t["distance"] for p, t, r in zip(predictions, truths, rates)])
    assert np.median(np.abs(rel - 1)) < 0.2, rel


def test_predictor_finds_off_centre_objects_in_release_images(demo_predictor):
    """Whole release photos at the training scale: the principal point must find the object.
    Measured (40 photos, 2-core CPU): 35 of 40 within pi/6, median 10.6 degrees, on the
    canvas that repeats the photo's border (36 of 40, 10.0 degrees on a black one, which the
    predictor no longer uses: a flat photo on black is a box); the Adam steps skipped: see
    .ci/breakages.py. Limit: 85 %."""
    dataroot, lay, names, predictor = demo_predictor
    release = Pascal3DRelease(layout.release_root(dataroot))
    images, scales, truths, offsets = [], [], [], []
    for name in names:
        anno = annotation.load(lay.annotation_path(name))
        record = load_record(release.annotation_path("car", name), "car")
        image = load_image_array(release.image_path("car", name))
        images.append(image)
        scales.append(annotation.resize_rate(anno))        # the training scale (objects at distance 5)
        truths.append(annotation.pose(anno))
        h, w = image.shape[:2]
        offsets.append((record.viewpoint.px - w / 2, record.viewpoint.py - h / 2))   # object centre - image centre
    offsets = np.asarray(offsets)
    assert np.median(np.abs(offsets[:, 0])) * np.median(scales) > 8     # off-centre by more than a map cell
    predictions = [predictor.predict(image, scale=s)[0] for image, s in zip(images, scales)]
    err = errors_deg(predictions, truths)
    assert np.mean(err < 30) >= 0.85, np.round(err, 1)
    # the translation found the object: the predicted centre is much closer to the true one
    # than the image centre is (input pixels)
    found = np.array([[p.shift_x, p.shift_y] for p in predictions])
    miss = np.linalg.norm(found - offsets, axis=1)
    assert np.median(miss) < 0.6 * np.median(np.linalg.norm(offsets, axis=1)), np.c_[found, offsets]
    # at the training scale of the original image, the distance is the annotated one
    rel = np.array([p.distance / t["distance"] for p, t in zip(predictions, truths)])
    assert np.median(np.abs(rel[err < 30] - 1)) < 0.2, rel


def translated(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``image`` moved by (dx, dy) pixels on a black canvas of the same size."""
    out = np.zeros_like(image)
    h, w = image.shape[:2]
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def test_predictor_recovers_distance_and_shift_from_perturbed_starts(demo_predictor):
    """Val crops moved by (+-14, +-6) pixels and given at scale 0.8 or 1.25: the object no
    longer sits at the solver's initial distance nor at a point of its initial shift grid,
    so only the Adam steps can find them. The predicted PASCAL3D+ distance must stay the
    annotated one (the scale is undone) and the predicted centre must follow the move.

    Measured (12 images, 2-core CPU): median |distance ratio - 1| 0.083 and median centre
    miss 13.9 input pixels (the crop's principal point plus the move, against the
    prediction); with the Adam steps skipped (initial grid only) 0.211 and 20.7 (the
    distance ratio is then 0.75 or 1.17 on every image). Pose error < 30 degrees on 11 of 12.
    Limits: 0.13, 17 pixels, 9 of 12."""
    _, lay, names, predictor = demo_predictor
    ratios, misses, errors = [], [], []
    for i, name in enumerate(names[:12]):
        scale, dx, dy = (0.8, 1.25)[i % 2], (14, -14)[(i // 2) % 2], (6, -6)[(i // 4) % 2]
        anno = annotation.load(lay.annotation_path(name))
        rate, truth = annotation.resize_rate(anno), annotation.pose(anno)
        crop = np.asarray(Image.open(lay.image_path(name)).convert("RGB"))
        h, w = crop.shape[:2]
        # the object's centre (its principal point) in the crop, relative to the crop's centre
        centre = (np.asarray(anno["principal"]) * rate - (anno["box"][2], anno["box"][0])
                  + (anno["padding"][1][0], anno["padding"][0][0]) - (w / 2, h / 2))
        p = predictor.predict(translated(crop, dx, dy), scale=scale)[0]
        ratios.append(p.distance * rate / truth["distance"])        # the crop is the image magnified by rate
        misses.append(np.hypot(p.shift_x - centre[0] - dx, p.shift_y - centre[1] - dy))
        errors.append(errors_deg([p], [truth])[0])
    ratios, misses, errors = np.array(ratios), np.array(misses), np.array(errors)
    assert np.median(np.abs(ratios - 1)) < 0.13, np.round(ratios, 3)
    assert np.median(misses) < 17, np.round(misses, 1)
    assert np.sum(errors < 30) >= 9, np.round(errors, 1)


def test_place_image_centres_and_scales():
    image = np.zeros((40, 100, 3), np.uint8)
    image[10:30, 10:20] = 255                                    # a block left of the centre
    placed = place_image(image, (64, 64))                        # fitted into the crop
    assert placed.scale == pytest.approx(0.64) and placed.canvas.shape == (64, 64, 3)
    rows, cols = np.nonzero(placed.canvas[..., 0] > 128)
    assert abs(cols.mean() - (32 + (15 - 50) * 0.64)) < 1.5 and abs(rows.mean() - 32) < 1.5
    assert np.abs(placed.offset).max() <= 0.5                     # centred (to half a pixel)
    placed = place_image(image, (32, 32), scale=1.0)             # larger than the crop: nothing is cut
    assert placed.canvas.shape == (40, 104, 3) and placed.canvas.sum() == image.sum()
    assert placed.offset == (52 - (2 + 50), 20 - (0 + 20))       # canvas centre - image centre


def test_predict_cli_writes_what_it_predicts(demo_predictor, tmp_path, capsys):
    from nemopose import cli, predict

    from conftest import linked_experiment

    dataroot, lay, names, predictor = demo_predictor
    images = [str(lay.image_path(n)) for n in names[:2]]
    exp = linked_experiment(dataroot.parent / "exp", tmp_path / "exp")     # the CLI stores a calibration there
    assert cli.run(predict.main, ["--category", "car", "--images", *images, "--exproot", str(exp),
                                  "--dataroot", str(dataroot), "--out", str(tmp_path / "out")]) == 0
    rows = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert header[:len(predict.CSV_COLUMNS)] == list(predict.CSV_COLUMNS) and len(rows) == 3
    api = predictor.predict(images)
    for row, p in zip(rows[1:], api):
        values = dict(zip(header, row.split(",")))
        assert float(values["azimuth"]) == pytest.approx(p.azimuth, abs=1e-4)   # the CLI is the API
    assert len(list((tmp_path / "out").glob("*_pose.png"))) == 2
    assert "azimuth" in capsys.readouterr().out
