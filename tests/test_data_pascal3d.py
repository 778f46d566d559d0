"""Reading PASCAL3D+ records, images, CAD folders and occluder masks (METHOD.md §6)."""

import math
import pickle

import numpy as np
import pytest
import scipy.io

from nemopose import constants
from nemopose.data import annotation, mat_record, pascal3d, synthetic, synthetic_scene

VIEW = synthetic_scene.View(azimuth=math.radians(123.4), elevation=math.radians(17.0), theta=math.radians(-3.0),
                      distance=6.5, px=251.25, py=180.5, height=375, width=500)


def _record(status=None):
    names = constants.KEYPOINT_NAMES["car"]
    status = np.array([1, 2, 0] * 4) if status is None else status
    xy = np.stack([np.arange(len(names)) * 10.0 + 0.25, np.arange(len(names)) * 5.0 + 0.5], axis=1)
    xy[status != 1] = 0
    record = synthetic.object_record("n0001", VIEW, np.array([10.5, 20.25, 300.0, 250.75]), 3, "sedan", status, xy)
    return mat_record.record_struct(record, "car", source="synthetic (nemopose)", database="synthetic"), xy


def test_mat_round_trip_has_the_real_nesting(tmp_path):
    """A record written with savemat reads back with the indexing of METHOD.md §6 (real data)."""
    rec, xy = _record()
    path = tmp_path / "n0001.mat"
    mat_record.save_struct(path, rec)
    raw = scipy.io.loadmat(path)["record"]
    assert list(raw["imgsize"][0, 0][0]) == [500, 375, 3]
    objects = raw["objects"][0, 0]
    assert objects.shape == (1, 1)
    np.testing.assert_allclose(objects["bbox"][0, 0][0], [10.5, 20.25, 300.0, 250.75])
    assert objects["cad_index"][0, 0][0, 0] == 3
    view = objects["viewpoint"][0, 0]
    assert view["azimuth"][0, 0][0, 0] == pytest.approx(123.4)
    assert view["distance"][0, 0][0, 0] == pytest.approx(6.5)
    assert view["viewport"][0, 0][0, 0] == 3000
    anchor = objects["anchors"][0, 0]["left_front_wheel"][0, 0]
    assert anchor["status"][0, 0][0, 0] == 1
    np.testing.assert_allclose(anchor["location"][0, 0][0], xy[0])

    record = mat_record.load_record(path, "car")
    assert record.name == "n0001" and (record.width, record.height) == (500, 375)
    assert record.cad_index == 3 and record.subtype == "sedan"
    assert record.viewpoint.azimuth == pytest.approx(VIEW.azimuth)
    assert record.viewpoint.theta == pytest.approx(VIEW.theta)
    np.testing.assert_allclose(record.viewpoint.principal, [251.25, 180.5])
    np.testing.assert_array_equal(record.keypoint_status, [1, 2, 0] * 4)
    np.testing.assert_allclose(record.keypoint_xy, xy)
    assert np.all(record.keypoint_xy[record.keypoint_status != 1] == 0)


def _strip(rec, path_keys):
    """A copy of the record with one field removed (path like ('objects', 'viewpoint', 'distance'))."""
    import copy

    rec = copy.deepcopy(rec)

    def drop(struct, keys):
        names = [n for n in struct.dtype.names if n != keys[0]]
        if len(keys) == 1:
            out = np.zeros(struct.shape, dtype=[(n, "O") for n in names])
            for idx in np.ndindex(struct.shape):
                for n in names:
                    out[idx][n] = struct[idx][n]
            return out
        for idx in np.ndindex(struct.shape):
            struct[idx][keys[0]] = drop(struct[idx][keys[0]], keys[1:])
        return struct

    if len(path_keys) == 1:
        rec.pop(path_keys[0])
    else:
        rec[path_keys[0]] = drop(rec[path_keys[0]], path_keys[1:])
    return rec


@pytest.mark.parametrize("keys, field", [
    (("imgsize",), "imgsize"),
    (("objects", "bbox"), "objects.bbox"),
    (("objects", "cad_index"), "objects.cad_index"),
    (("objects", "viewpoint", "distance"), "objects.viewpoint.distance"),
    (("objects", "viewpoint", "theta"), "objects.viewpoint.theta"),
    (("objects", "anchors", "right_back_trunk"), "objects.anchors.right_back_trunk"),
    (("objects", "anchors", "left_front_wheel", "location"), "objects.anchors.left_front_wheel.location"),
])
def test_missing_field_is_named(tmp_path, keys, field):
    rec, _ = _record()
    path = tmp_path / "bad.mat"
    mat_record.save_struct(path, _strip(rec, keys))
    with pytest.raises(mat_record.RecordError, match=f"bad.mat: missing or malformed field '{field}'"):
        mat_record.load_record(path, "car")


def test_unreadable_record_and_image_are_named(tmp_path):
    (tmp_path / "x.mat").write_bytes(b"MATLAB garbage")
    with pytest.raises(mat_record.RecordError, match="x.mat: cannot read .mat file"):
        mat_record.load_record(tmp_path / "x.mat", "car")
    with pytest.raises(mat_record.RecordError, match="does not exist"):
        mat_record.load_record(tmp_path / "none.mat", "car")
    from PIL import Image
    import io

    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buf, format="JPEG")
    (tmp_path / "t.JPEG").write_bytes(buf.getvalue()[:300])          # truncated
    with pytest.raises(pascal3d.ImageReadError, match="t.JPEG: cannot decode image"):
        pascal3d.load_image_array(tmp_path / "t.JPEG")
    grey = tmp_path / "g.JPEG"
    Image.fromarray(np.full((8, 9), 7, np.uint8)).save(grey)
    assert pascal3d.load_image_array(grey).shape == (8, 9, 3)             # grey images become RGB


def test_release_lists_cad_models_and_subsets(tmp_path):
    release = pascal3d.Pascal3DRelease(tmp_path)
    cad = release.cad_dir("car")
    cad.mkdir(parents=True)
    for name in ("01.off", "02.off", "10.off", "01_old.off", "readme.txt", "03.off.bak"):
        (cad / name).write_text("OFF\n0 0 0\n")
    assert [p.name for p in release.cad_model_paths("car")] == ["01.off", "02.off", "10.off"]
    assert pascal3d.is_cad_model_file("99.off") and not pascal3d.is_cad_model_file("100_x.off")

    sets = tmp_path / "Image_sets"
    sets.mkdir()
    (sets / "car_imagenet_train.txt").write_text("a_1\nb_2\n\n")
    (sets / "car_imagenet_subtype.txt").write_text("sedan\nothers\n")
    assert release.image_set("car", "train") == ["a_1", "b_2"]
    assert release.subtypes("car") == ["sedan", "others"]
    assert release.image_subsets("car", "train") is None
    (tmp_path / "Image_subsets").mkdir()
    with open(release.image_subsets_path("car", "train"), "wb") as fh:
        pickle.dump([("a_1",), ["b_2"]], fh)       # lists, tuples, strings only (test_image_subsets.py)
    assert release.image_subsets("car", "train") == [["a_1"], ["b_2"]]


def test_occluder_mask(tmp_path):
    np.savez_compressed(tmp_path / "m.npz", occluder_mask=np.eye(3, dtype=bool))
    np.testing.assert_array_equal(pascal3d.load_occluder_mask(tmp_path / "m.npz"), np.eye(3, dtype=bool))
    np.savez(tmp_path / "n.npz", other=np.eye(3))
    with pytest.raises(mat_record.RecordError, match="n.npz: missing or malformed field 'occluder_mask'"):
        pascal3d.load_occluder_mask(tmp_path / "n.npz")
    with pytest.raises(mat_record.RecordError, match="does not exist"):
        pascal3d.load_occluder_mask(tmp_path / "none.npz")


def test_real_sample_annotation_has_our_keys(fixture_data):
    """The authors' real prepared car loads, and our 2D annotations carry every key it has."""
    from nemopose.data.crop import crop_geometry

    sample = annotation.load(fixture_data / "real" / "nemo_sample_car" / "car_annotation.npz")
    assert sample["box"].shape == (6,) and sample["cropped_kp_list"].shape == (12, 2)
    record = mat_record.ObjectRecord("n0001", 500, 375, np.array([10.5, 20.25, 300.0, 250.75]), 3,
                                   mat_record.Viewpoint(1.0, 0.2, 0.0, 6.5, 1.0, 251.0, 180.0, 3000.0),
                                   np.ones(12, np.int64), np.full((12, 2), 100.0))
    geom = crop_geometry(record.bbox, record.viewpoint.principal, 6.5, (375, 500), (256, 672))
    ours = annotation.annotation_2d(record, geom, None)
    assert set(sample) <= set(ours)
    for key in sample:
        assert np.asarray(ours[key]).shape == np.asarray(sample[key]).shape, key
