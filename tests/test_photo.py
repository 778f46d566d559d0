"""Pose from photos (issue 15): SYNTHETIC release images, uncropped, with their annotation
boxes, a car trained with the demo preset (conftest.demo_car).

Measured (2-core CPU, benchmarks/photo_accuracy.py on the same 40 val objects): the
prepared crops solved as InferenceNeMo.sh solves them 100 / 100 % (pi/6 / pi/18), median
2.5 degrees; the photos with their boxes 100 / 100 %, 3.6 degrees (6.1 with the origin
from the projected cuboid instead of the training objects' offsets); whole photos without
boxes (20) 95 / 60 %, 6.5 degrees; empty photos (noise, smooth noise, flat, shuffled
blocks; 20) "no" on 20. Limits below leave room for other seeds and CPUs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from nemopose import cli, evaluate, predict
from nemopose.data import annotation, layout
from nemopose.data.crop import apply_crop, crop_geometry
from nemopose.data.mat_record import load_record
from nemopose.data.pascal3d import Pascal3DRelease, load_image_array
from nemopose.errors import UsageError
from nemopose.experiment import CheckpointNotFound, Experiment
from nemopose.photo import boxes as B
from nemopose.photo.calibration import PhotoCalibration, choose_threshold, negative_images, own_colour
from nemopose.predict import PosePredictor, Prediction
from test_detect import mirror, tiny, tiny_weights  # noqa: F401  (fixtures: the small detector, the loopback mirror)

ANGLES = ("azimuth", "elevation", "theta")
N_IMAGES = 40


def errors_deg(predictions, truths) -> np.ndarray:
    return evaluate.rotation_errors_deg({k: [getattr(p, k) for p in predictions] for k in ANGLES},
                                        {k: [t[k] for t in truths] for k in ANGLES})


# ----------------------------------------------------------------------------- units, no network


def test_box_csv_is_read_and_bad_rows_name_file_and_line(tmp_path):
    good = tmp_path / "boxes.csv"
    good.write_text("image,x0,y0,x1,y1\na.jpg,1,2,30,40\nb.jpg,0,0,10,10\na.jpg,5,5,9,9\n")
    table = B.read_boxes_csv(good)
    assert table == {"a.jpg": [B.Box(1, 2, 30, 40), B.Box(5, 5, 9, 9)], "b.jpg": [B.Box(0, 0, 10, 10)]}
    assert B.boxes_for_images(table, ["photos/a.jpg", "b.jpg", "c.jpg"], "boxes.csv") == \
        [table["a.jpg"], table["b.jpg"], []]
    with pytest.raises(UsageError, match="not given: b.jpg"):
        B.boxes_for_images(table, ["a.jpg"], "boxes.csv")
    for text, says in [("img,x0,y0,x1,y1\n", "header must be"), ("image,x0,y0,x1,y1\na.jpg,1,2,x,4\n", ":2:"),
                       ("image,x0,y0,x1,y1\na.jpg,10,2,5,40\n", ":2: box .* is empty")]:
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(UsageError, match=f"bad.csv{says}" if says.startswith(":") else says):
            B.read_boxes_csv(bad)


def test_object_sizes_give_a_box_its_training_size():
    # wide boxes are larger than tall ones (a side view of a car against a front view)
    heights = [50] * 20 + [80] * 20
    widths = [150] * 20 + [80] * 20
    sizes = B.ObjectSizes.from_boxes(heights, widths, image_scale=0.5)
    assert sizes.size_for(3.0) == pytest.approx(math.sqrt(50 * 150), rel=1e-4)       # stored to 3 decimals
    assert sizes.size_for(1.0) == pytest.approx(80)
    box = B.Box(10, 10, 10 + 300, 10 + 100)                      # a side view at twice the training size
    assert sizes.scale_for(box) == pytest.approx(0.5, rel=1e-4)
    assert B.ObjectSizes.from_json(sizes.to_json()) == sizes


def test_origin_offset_from_the_nearest_training_viewpoints():
    # seen from the front (azimuth 0) the origin is 0.1 box sizes above the box centre, from
    # the side (azimuth pi/2) 0.05 to the right
    origins = [(0.0 + 0.01 * k, 0.2, 0.0, -0.1) for k in range(10)] + \
              [(np.pi / 2 + 0.01 * k, 0.2, 0.05, 0.0) for k in range(10)]
    sizes = B.ObjectSizes.from_boxes([50] * 20, [100] * 20, 1.0, origins=origins)
    box = B.Box(0, 0, 200, 50)                                       # sqrt(w h) = 100
    assert sizes.origin_offset(2 * np.pi - 0.02, 0.25, box) == pytest.approx((0.0, -10.0))   # azimuth wraps
    assert sizes.origin_offset(np.pi / 2 + 0.03, 0.2, box) == pytest.approx((5.0, 0.0))
    assert B.ObjectSizes.from_json(sizes.to_json()) == sizes
    no_origins = B.ObjectSizes.from_boxes([50], [100], 1.0)
    assert no_origins.origin_offset(0.0, 0.0, box) == (0.0, 0.0)                  # the box centre


def test_box_crop_is_the_preparation_crop():
    """A box cropped at a rate is the preparation's crop (centre of the box) of that rate,
    and the placement maps input pixels onto it."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 140, 3), dtype=np.uint8)
    box = B.Box(100, 20, 150, 60)                                # cut by the right border
    placed = B.crop_box(image, box, 0.8, (64, 96))
    geo = crop_geometry(np.array(box.as_tuple()), np.zeros(2), 0, (90, 140), (64, 96), center="bbox",
                        resize_rate=0.8)
    np.testing.assert_array_equal(placed.canvas, apply_crop(image, geo))
    assert placed.canvas.shape == (64, 96, 3) and placed.canvas[:, -10:].max() == 0   # padded as prepared
    # the box centre lands at the canvas centre (to the int truncations): the input image's
    # centre (70, 45) is ``offset`` canvas pixels from it
    x, y = 70 + placed.offset[0] / placed.scale, 45 + placed.offset[1] / placed.scale
    assert abs(x - 125) < 1.5 and abs(y - 40) < 1.5
    with pytest.raises(UsageError, match="outside"):
        B.crop_box(image, B.Box(500, 500, 600, 600), 0.8, (64, 96))


def test_boxes_must_come_per_image():
    predictor = PosePredictor.__new__(PosePredictor)      # the argument checks come before any network
    image = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(UsageError, match=r"write \[\[\(x0, y0, x1, y1\)\]\]"):
        predictor.predict([image, image], boxes=[(1, 2, 10, 12), (3, 4, 9, 9)])
    with pytest.raises(UsageError, match="one list per image, got 1 lists for 2 images"):
        predictor.predict([image, image], boxes=[[(1, 2, 10, 12)]])
    with pytest.raises(UsageError, match="not both"):
        predictor.predict(image, boxes=[(1, 2, 10, 12)], detect=True)


def test_presence_score_against_its_two_rivals(fixture_data):
    """The formula on a real cuboid with random unit vertex features: equal to a slow
    per-cell computation; high where the rendered features are the map's (an object); at
    most 0 on a map of one vertex feature everywhere (a flat image: one vertex explains every
    cell as well as the mesh) and on clutter."""
    from nemopose import geometry, mesh
    from nemopose.photo import presence
    from nemopose.render import raster as render
    from nemopose.solve.solver import MeshPoseSolver

    verts, faces = mesh.load_off(fixture_data / "real" / "CAD_single" / "car" / "01.off")
    g = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(len(verts), 16, generator=g), dim=1)
    clutter = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    solver = MeshPoseSolver(verts, faces, feats, (32, 84), 5.0)
    pose = torch.tensor([[1.0, 0.3, 0.1, 5.0]])
    centre = geometry.camera_center(pose[:, 0], pose[:, 1], pose[:, 3])
    rendered = render.render_features(torch.as_tensor(verts, dtype=torch.float32), torch.as_tensor(faces), feats,
                                      centre, pose[:, 2], render.RenderCamera((32, 84)))
    inside = rendered.abs().sum(1, keepdim=True) > 0
    noise = torch.randn(1, 16, 32, 84, generator=g)
    object_map = torch.nn.functional.normalize(torch.where(inside, rendered, clutter.reshape(1, 16, 1, 1))
                                               + 0.2 * noise, dim=1)
    flat_map = feats[7].reshape(1, 16, 1, 1).expand(1, 16, 32, 84).contiguous()
    clutter_map = torch.nn.functional.normalize(clutter.reshape(1, 16, 1, 1) + 0.3 * noise, dim=1)
    maps = torch.cat([object_map, flat_map, clutter_map])
    got = presence.presence_scores(solver, maps, clutter, pose.repeat(3, 1))
    # the slow reference: per covered cell, its rendered feature (the same interpolation)
    frags = solver.scorer.rasterize(centre, pose[:, 2])
    cells = torch.nonzero(frags.pix_to_face[0].reshape(-1) >= 0).squeeze(1)
    vertex_feature = render.interpolate_vertex_features(frags, solver.scorer.faces, feats)[0].reshape(16, -1)[:, cells]
    for i in range(3):
        f = maps[i].reshape(16, -1)[:, cells]
        s_o = (vertex_feature * f).sum(0).mean()
        rivals = max(float((clutter[:, None] * f).sum(0).mean()), float((feats @ f).mean(1).max()))
        assert float(got.score[i]) == pytest.approx(float(s_o) - rivals, abs=1e-4)
        clutter_fit = float((clutter[:, None] * f).sum(0).mean())
        assert float(got.clutter_margin[i]) == pytest.approx(float(s_o) - clutter_fit, abs=1e-4)
    assert got.score[0] > 0.3 and got.score[1] <= 1e-6 and got.score[2] < 0     # measured 0.44, 0, < 0
    # a render distance no training crop shows, or nothing covered: -2
    far = presence.presence_scores(solver, maps[:1], clutter, torch.tensor([[1.0, 0.3, 0.1, 30.0]]),
                                   training_distance=5.0)
    assert float(far.score[0]) == presence.IMPLAUSIBLE_SCORE


def test_flat_boxes():
    from nemopose.photo.presence import is_flat

    image = np.broadcast_to(np.array([10, 200, 30], np.uint8), (30, 40, 3)).copy()      # flat, colourful
    assert is_flat(image, (0, 0, 40, 30)) and is_flat(image, (-5, -5, 10, 10))
    image[20:, 30:] = 0
    assert not is_flat(image, (0, 0, 40, 30)) and is_flat(image, (0, 0, 20, 15))


def test_threshold_rule():
    low = np.percentile([0.8, 0.85, 0.9], 5)
    assert choose_threshold([0.8, 0.9, 0.85], [0.1, 0.2]) == pytest.approx((0.2 + low) / 2)
    t = choose_threshold([0.3, 0.8, 0.9, 0.85], [0.1, 0.2, 0.5])      # overlapping: best balanced accuracy
    assert 0.5 < t < 0.8


def test_shift_grid():
    grid = np.array(predict.shift_grid((16, 42)))                # 3 x 3, +-8 % of the map
    assert grid.shape == (9, 2) and grid[:, 0].max() == pytest.approx(0.08 * 42)
    assert grid[:, 1].min() == pytest.approx(-0.08 * 16) and (0.0, 0.0) in predict.shift_grid((16, 42))


def test_checkpoint_and_device_mistakes_are_one_line(tmp_path, capsys):
    with pytest.raises(CheckpointNotFound, match="checkpoint .*missing.pth does not exist"):
        PosePredictor.from_checkpoint(tmp_path / "missing.pth", "car", dataroot=tmp_path / "no-data")
    if not predict.torch.cuda.is_available():
        (tmp_path / "some.pth").write_bytes(b"x")
        with pytest.raises(UsageError, match=r"device='cuda' but torch.cuda.is_available\(\) is False"):
            PosePredictor.from_checkpoint(tmp_path / "some.pth", "car", device="cuda")
    Image.new("RGB", (40, 30)).save(tmp_path / "x.png")
    assert cli.run(predict.main, ["--category", "car", "--images", str(tmp_path / "x.png"),
                                  "--boxes", str(tmp_path / "no.csv")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: boxes file {tmp_path / 'no.csv'} does not exist"


# ----------------------------------------------------------------------------- the trained car


@pytest.fixture(scope="module")
def photos(demo_car, tmp_path_factory):
    """The demo car's checkpoint (linked into a temporary experiment), calibrated, and the
    release images of its first N_IMAGES val objects with boxes, truths and prepared crops."""
    from conftest import linked_experiment

    dataroot, exproot = demo_car
    exp = linked_experiment(exproot, tmp_path_factory.mktemp("photo") / "exp")
    checkpoint = Experiment(exp, "single").final_checkpoint("car")
    assert PosePredictor.from_checkpoint(checkpoint, "car", dataroot=dataroot, calibrate="no").calibration is None
    first = PosePredictor.from_checkpoint(checkpoint, "car", dataroot=dataroot)     # calibrates once, stores it
    assert PhotoCalibration.path_for(checkpoint).is_file() and first.calibration.threshold is not None
    lay = layout.split_layout(dataroot, "val", "car")
    release = Pascal3DRelease(layout.release_root(dataroot))
    names = layout.read_list(lay.mesh_list_path("single", 1))[:N_IMAGES]
    data = {
        "paths": [release.image_path("car", n) for n in names],
        "boxes": [tuple(float(v) for v in load_record(release.annotation_path("car", n), "car").bbox) for n in names],
        "truths": [annotation.pose(annotation.load(lay.annotation_path(n))) for n in names],
        "crops": [load_image_array(lay.image_path(n)) for n in names],
    }
    data["images"] = [load_image_array(p) for p in data["paths"]]
    return {"dataroot": dataroot, "exp": exp, "checkpoint": checkpoint, **data}


@pytest.fixture(scope="module")
def predictor(photos):
    """A predictor loaded as a user loads it: it finds the stored calibration."""
    found = PosePredictor.from_experiment(photos["exp"], "car", dataroot=photos["dataroot"])
    assert found.calibration is not None and found.calibration.threshold is not None
    return found


@pytest.mark.slow
def test_boxes_match_inference_on_the_same_objects(photos, predictor):
    """Photos with their annotation boxes against InferenceNeMo's solve of the prepared
    crops of the same objects (the crop at scale 1, principal point fixed, one solve)."""
    baseline = PosePredictor.from_checkpoint(photos["checkpoint"], "car", dataroot=photos["dataroot"],
                                             translation=False, refine=False)
    base = errors_deg(baseline.predict(photos["crops"], scale=1.0), photos["truths"])
    found = predictor.predict(photos["images"], boxes=[[b] for b in photos["boxes"]])
    err = errors_deg(found, photos["truths"])
    assert np.mean(err < 30) >= np.mean(base < 30) - 0.05, (np.round(err, 1), np.round(base, 1))
    assert np.mean(err < 10) >= np.mean(base < 10) - 0.15, (np.round(err, 1), np.round(base, 1))
    assert np.median(err) <= max(5.0, 2 * np.median(base)), np.round(err, 1)   # measured 3.6 against 2.5
    assert [p.box for p in found] == photos["boxes"] and [p.image for p in found] == list(range(N_IMAGES))
    assert all(p.object_found for p in found), [round(p.score, 3) for p in found]
    # the distance is the annotated one (focal 3000 on the photo), the centre where the object is
    rel = np.array([p.distance / t["distance"] for p, t in zip(found, photos["truths"])])
    assert np.median(np.abs(rel - 1)) < 0.15, np.round(rel, 2)
    # without the refinement (one solve from the box crop) it is worse or equal, never far better
    one = PosePredictor.from_checkpoint(photos["checkpoint"], "car", dataroot=photos["dataroot"], refine=False)
    err_one = errors_deg(one.predict(photos["images"], boxes=[[b] for b in photos["boxes"]]), photos["truths"])
    assert np.median(err) <= np.median(err_one) + 1.0, (np.median(err), np.median(err_one))


@pytest.mark.slow
def test_several_objects_in_one_photo(photos, predictor):
    """Two cars side by side in one photo, two boxes: each gets its own pose, in box order."""
    a, b = photos["images"][0], photos["images"][1]
    h = max(a.shape[0], b.shape[0])
    photo = np.zeros((h, a.shape[1] + b.shape[1], 3), np.uint8)
    photo[:a.shape[0], :a.shape[1]] = a
    photo[:b.shape[0], a.shape[1]:] = b
    ba, bb = photos["boxes"][0], photos["boxes"][1]
    boxes = [ba, (bb[0] + a.shape[1], bb[1], bb[2] + a.shape[1], bb[3])]
    found = predictor.predict(photo, boxes=boxes)
    assert len(found) == 2 and [p.box for p in found] == boxes
    err = errors_deg(found, photos["truths"][:2])
    assert np.all(err < 30), err
    # the objects' centres are in their halves
    assert found[0].shift_x + photo.shape[1] / 2 < a.shape[1] < found[1].shift_x + photo.shape[1] / 2


@pytest.mark.slow
def test_whole_photos_without_boxes(photos, predictor):
    """No box: the scale is searched and the principal point optimised (measured 95 % within
    pi/6 on 20 photos, median 6.5 degrees)."""
    n = 8
    found = predictor.predict(photos["images"][:n])
    err = errors_deg(found, photos["truths"][:n])
    assert np.sum(err < 30) >= 6, np.round(err, 1)
    assert [p.box for p in found] == [(0.0, 0.0, float(i.shape[1]), float(i.shape[0])) for i in photos["images"][:n]]
    assert np.ptp([p.azimuth for p in found]) > 1.0
    rel = np.array([p.distance / t["distance"] for p, t in zip(found, photos["truths"][:n])])
    assert np.median(np.abs(rel[err < 30] - 1)) < 0.25, np.round(rel, 2)


@pytest.mark.slow
def test_no_object_on_noise_and_flat_photos(photos, predictor):
    """Photo-sized noise and flat images (not the calibration's: another seed, other sizes)
    are answered "no"; the calibration itself separated the val crops from its negatives."""
    calibration = predictor.calibration
    assert min(calibration.positives) > calibration.threshold
    assert all(max(v) < calibration.threshold for v in calibration.negatives.values())
    empties = negative_images(photos["images"][:3], per_kind=3, seed=99)
    # each car's own colour (the median in its box), flat, and with faint noise (std 4 grey
    # levels: not flat by presence.is_flat, still nothing to see): the hardest empty photos
    rng = np.random.default_rng(7)
    flat_cars = [own_colour(image, B.Box(*b)) for image, b in zip(photos["images"][-8:], photos["boxes"][-8:])]
    faint = [np.clip(f + rng.normal(0, 4, f.shape), 0, 255).astype(np.uint8) for f in flat_cars]
    images = empties["noise"] + empties["flat"] + flat_cars + faint + [np.full((300, 400, 3), 128, np.uint8)]
    answers = predictor.predict(images) + predictor.predict(flat_cars, boxes=[[b] for b in photos["boxes"][-8:]])
    assert [p.object_found for p in answers] == [False] * len(answers), [round(p.score, 3) for p in answers]
    cars = predictor.predict(photos["images"][:3], boxes=[[b] for b in photos["boxes"][:3]])
    assert min(p.score for p in cars) > max(p.score for p in answers)


class _BoxDetector:
    """Stands in for the COCO detector: returns given boxes (the real detector's download
    and output are tested in test_detect.py)."""

    def __init__(self, boxes):
        self.boxes, self.calls = boxes, []

    def detect(self, images, category, min_score=0.5):
        from nemopose.photo.detect import Detection

        self.calls.append((len(images), category, min_score))
        return [[Detection(box, 0.9)] if box is not None else [] for box in self.boxes]


@pytest.mark.slow
def test_detected_boxes_are_solved_like_given_boxes(photos, predictor, monkeypatch):
    boxes = [photos["boxes"][0], None, photos["boxes"][2]]
    fake = _BoxDetector(boxes)
    monkeypatch.setattr(predictor, "_detector", fake)
    found = predictor.predict(photos["images"][:3], detect=True, min_score=0.3)
    assert fake.calls == [(3, "car", 0.3)]
    assert [p.image for p in found] == [0, 1, 2]
    assert found[1].box is None and found[1].object_found is False and math.isnan(found[1].azimuth)
    given = predictor.predict([photos["images"][0], photos["images"][2]],
                              boxes=[[photos["boxes"][0]], [photos["boxes"][2]]])
    for d, g in zip([found[0], found[2]], given):
        assert d.azimuth == pytest.approx(g.azimuth, abs=1e-6) and d.detector_score == 0.9


@pytest.mark.slow
def test_cli_writes_one_row_per_box_and_pictures_at_photo_size(photos, predictor, tmp_path, capsys):
    paths = [str(p) for p in photos["paths"][:2]]
    csv_path = tmp_path / "boxes.csv"
    b0, b1 = photos["boxes"][0], photos["boxes"][1]
    csv_path.write_text("image,x0,y0,x1,y1\n" + "".join(
        f"{name},{','.join(str(v) for v in box)}\n"
        for name, box in [(paths[0], b0), (paths[1].split("/")[-1], b1), (paths[0], (0, 0, 60, 50))]))
    out = tmp_path / "out"
    assert cli.run(predict.main, ["--category", "car", "--images", *paths, "--exproot", str(photos["exp"]),
                                  "--dataroot", str(photos["dataroot"]), "--boxes", str(csv_path),
                                  "--out", str(out)]) == 0
    lines = (out / "predictions.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:len(predict.CSV_COLUMNS)] == list(predict.CSV_COLUMNS)
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    assert [r["image"] for r in rows] == [paths[0], paths[0], paths[1]]
    api = predictor.predict([photos["images"][0], photos["images"][0], photos["images"][1]],
                            boxes=[[b0], [(0, 0, 60, 50)], [b1]])
    for row, p in zip(rows, api):
        assert float(row["azimuth"]) == pytest.approx(p.azimuth, abs=1e-4)       # the CLI is the API
        assert float(row["azimuth_deg"]) == pytest.approx(math.degrees(p.azimuth), abs=1e-3)
        assert row["object_found"] in ("yes", "no")
    assert rows[0]["object_found"] == "yes" and rows[2]["object_found"] == "yes"
    for path, image in zip(paths, photos["images"][:2]):
        picture = Image.open(out / f"{path.split('/')[-1].rsplit('.', 1)[0]}_pose.png")
        assert picture.size == (image.shape[1], image.shape[0])
        drawn = np.asarray(picture).astype(int) - image.astype(int)
        x0, y0, x1, y1 = (int(v) for v in photos["boxes"][paths.index(path)])
        inside = np.abs(drawn[y0:y1, x0:x1]).sum(-1) > 30
        assert inside.mean() > 0.2                          # the mesh is drawn over the object
    assert "object found: yes" in capsys.readouterr().out


def test_prediction_row_has_the_issue_columns():
    p = Prediction(0.5, 0.1, -0.05, 6.0, 5.5, 1.0, 2.0, 0.3, 1, image=0, box=(1, 2, 3, 4), scale=0.5, score=0.7,
                   object_found=True)
    row = p.csv_row("a.jpg")
    assert list(row)[:len(predict.CSV_COLUMNS)] == list(predict.CSV_COLUMNS)
    assert row["object_found"] == "yes" and row["azimuth_deg"] == pytest.approx(math.degrees(0.5), abs=1e-5)
    nothing = Prediction.nothing(3).csv_row("b.jpg")
    assert nothing["object_found"] == "no" and math.isnan(nothing["azimuth"])


@pytest.mark.slow
def test_cli_detect_with_a_small_random_detector_from_a_loopback_mirror(photos, tiny, mirror, tmp_path):
    """--detect end to end: the weights of a small randomly initialised detector (test_detect's
    "tiny") come from a loopback mirror, hash-checked; its two most confident car boxes per
    photo are solved and written, one row each, with the detector's confidence."""
    out = tmp_path / "out"
    paths = [str(p) for p in photos["paths"][:2]]
    assert cli.run(predict.main, ["--category", "car", "--images", *paths, "--exproot", str(photos["exp"]),
                                  "--dataroot", str(photos["dataroot"]), "--detect", "--detector", "tiny",
                                  "--min-score", "0", "--max-objects", "2", "--mirror", mirror.url,
                                  "--out", str(out)]) == 0
    assert [path for path, _ in mirror.requests] == [f"/{tiny}"]              # downloaded once
    lines = (out / "predictions.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    images = [r["image"] for r in rows]
    assert images == sorted(images) and all(1 <= images.count(p) <= 2 for p in paths), images
    for row in rows:
        image = photos["images"][paths.index(row["image"])]
        x0, y0, x1, y1 = (float(row[c]) for c in ("x0", "y0", "x1", "y1"))
        assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
        assert min(x1 - x0, y1 - y0) >= predict.MIN_DETECTED_SIDE          # slivers are dropped
        assert math.isfinite(float(row["azimuth"])) and row["object_found"] in ("yes", "no")
        assert 0 <= float(row["detector_score"]) <= 1
    for a, b in zip(rows, rows[1:]):
        if a["image"] == b["image"]:                                       # most confident first
            assert float(a["detector_score"]) >= float(b["detector_score"])


@pytest.mark.slow
def test_printed_example_runs_as_printed(photos, tmp_path, capsys):
    """--print-example (what the demo prints at its end): its shell line, run as printed,
    predicts the first val photo with its annotated box; the Python snippet names the same
    photo and box."""
    import shlex

    exproot = tmp_path / "exp"
    (exproot / "NeMo_single").mkdir(parents=True)
    for f in (photos["exp"] / "NeMo_single").iterdir():                  # checkpoint and its calibration
        (exproot / "NeMo_single" / f.name).symlink_to(f)
    assert cli.run(predict.main, ["--category", "car", "--exproot", str(exproot), "--dataroot",
                                  str(photos["dataroot"]), "--print-example"]) == 0
    printed = capsys.readouterr().out
    shell = printed.splitlines()[0].split()
    assert shell[:3] == [".venv/bin/python", "-m", "nemopose.predict"]
    assert cli.run(predict.main, shell[3:]) == 0
    out = capsys.readouterr().out
    assert "object found: yes" in out and str(photos["paths"][0]) in out
    box = tuple(round(v) for v in photos["boxes"][0])
    assert f"boxes=[[{box}]]" in printed and f'"{photos["paths"][0]}"' in printed
    rows = (exproot / "photos" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 2 and shlex.split(printed.splitlines()[0])[-1] == str(exproot / "photos")
