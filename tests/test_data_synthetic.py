"""The synthetic PASCAL3D+ generator (METHOD.md §14)."""

import math

import numpy as np
import pytest

from nemopose import constants, geometry, mesh
from nemopose.data import layout, mat_record, prepare, synthetic, synthetic_cad, synthetic_scene

TINY = synthetic.preset("tiny")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with prepare.torch_threads(1):
        yield


@pytest.mark.parametrize("category", constants.CATEGORIES)
def test_every_category_renders_a_sensible_object(category, fixture_data, tmp_path):
    models = synthetic.cad_models(category, TINY)
    assert len(models) == TINY.n_cad
    for m in models:
        assert m.anchors.shape == (len(constants.KEYPOINT_NAMES[category]), 3)
        assert np.isclose(np.linalg.norm(m.face_normal, axis=1), 1).all()
        # anchors are mesh vertices
        assert all(np.isclose(m.verts, a).all(1).any() for a in m.anchors)
    # Sizes close to the real CAD models: the cuboid extents within the size factor's reach.
    real, _ = mesh.load_off(fixture_data / "real" / "CAD_single" / category / "01.off")
    ours, _ = mesh.cuboid_from_cad([m.verts for m in models])
    ratio = np.ptp(ours, 0) / np.ptp(real, 0)
    factor = synthetic_cad.SIZE_FACTOR[category]
    assert (ratio > 0.6 * factor).all() and (ratio < 1.25 * factor).all(), ratio
    image, record, rendered = synthetic.generate_image(category, "train", 0, models, TINY)
    mat_record.save_record(tmp_path / "r.mat", record, category)
    rec = mat_record.load_record(tmp_path / "r.mat", category)
    x0, y0, x1, y1 = rec.bbox
    h, w = rendered.mask.shape
    assert (rec.width, rec.height) == (w, h)
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h                  # fully inside the image
    assert 0.25 < max((x1 - x0) / w, (y1 - y0) / h) <= 0.9
    assert image.shape == (h, w, 3) and 0 <= image.min() and image.max() <= 1
    assert set(rec.keypoint_status) <= {0, 1, 2} and (rec.keypoint_status == 1).any()
    # Visible keypoints are where their anchor projects.
    vp = rec.viewpoint
    xy = geometry.project_points(models[rec.cad_index - 1].anchors, vp.azimuth, vp.elevation, vp.theta,
                                 vp.distance, vp.focal, vp.principal, vp.viewport)
    vis = rec.keypoint_status == 1
    np.testing.assert_allclose(rec.keypoint_xy[vis], xy[vis], atol=1e-6)
    # The principal point is where the CAD origin projects, near the object.
    assert x0 - 0.2 * w < vp.px < x1 + 0.2 * w and y0 - 0.2 * h < vp.py < y1 + 0.2 * h


def test_views_fit_the_crop_and_are_pascal_like():
    rng = np.random.default_rng(0)
    model = synthetic.cad_models("car", TINY)[0]
    views = [synthetic_scene.sample_view(rng, model, "car", TINY.width_range, TINY.aspect_range, TINY.object_fraction) for _ in range(200)]
    az = np.array([v.azimuth for v in views])
    el = np.degrees([v.elevation for v in views])
    assert np.histogram(az, bins=4, range=(0, 2 * math.pi))[0].min() > 30       # azimuth uniform
    assert np.mean((el >= -10) & (el <= 40)) > 0.8
    assert max(abs(math.degrees(v.theta)) for v in views) <= 15
    fills = [synthetic_scene.crop_fill(model, "car", v.azimuth, v.elevation, v.theta) for v in views]
    assert np.mean(np.array(fills) <= synthetic_scene.CROP_FILL) > 0.95


def test_pose_is_identifiable_from_appearance():
    """No symmetry hides the azimuth: opposite sides have different colours."""
    model = synthetic.cad_models("car", TINY)[0]
    means = []
    for az in (0.0, math.pi / 2, math.pi, 3 * math.pi / 2):
        r = synthetic_scene.render_object(model, az, 0.0, 0.0, 12.0, (120.0, 90.0), (180, 240))
        means.append(r.colour[r.mask].mean(0))
    means = np.array(means)
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert dist[np.triu_indices(4, 1)].min() > 0.08


def test_deterministic_and_seeded():
    models = synthetic.cad_models("car", TINY)
    a = synthetic.generate_image("car", "val", 1, models, TINY)[0]
    b = synthetic.generate_image("car", "val", 1, models, TINY)[0]
    np.testing.assert_array_equal(a, b)
    other = synthetic.preset("tiny", seed=1)
    c = synthetic.generate_image("car", "val", 1, synthetic.cad_models("car", other), other)[0]
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_occluders_cover_the_level():
    models = synthetic.cad_models("car", TINY)
    image, _, rendered = synthetic.generate_image("car", "val", 0, models, TINY)
    rng = np.random.default_rng(0)
    for level, (lo, hi) in constants.OCCLUSION_FG_RANGES.items():
        out, mask, frac = synthetic_scene.paste_occluders(rng, image, rendered.mask, (lo, hi))
        assert lo <= frac <= hi and mask.dtype == bool
        assert frac == pytest.approx((mask & rendered.mask).sum() / rendered.mask.sum())
        assert not np.array_equal(out[mask], image[mask]) and np.array_equal(out[~mask], image[~mask])


def test_generate_marks_and_refuses_mismatch(tmp_path):
    config = synthetic.preset("tiny", occluded=False, n_train=1, n_val=1)
    synthetic.generate(tmp_path, ["bus"], config, progress=False)
    marker = synthetic.read_marker(tmp_path)
    assert marker["synthetic"] and marker["categories"] == ["bus"] and "NOT PASCAL3D+" in marker["note"]
    release = layout.release_root(tmp_path)
    assert (release / "Images" / "bus_imagenet" / "synthetic_bus_train_0000.JPEG").is_file()
    assert (release / "CAD" / "bus.mat").is_file()
    anchors = synthetic_cad.load_cad_anchors(release / "CAD" / "bus.mat", "bus")
    np.testing.assert_allclose(anchors[0], synthetic.cad_models("bus", config)[0].anchors)
    with pytest.raises(synthetic.SyntheticMismatch, match="other settings"):
        synthetic.generate(tmp_path, ["bus"], synthetic.preset("tiny", seed=5, occluded=False), progress=False)
