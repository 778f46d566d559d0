"""The camera model against an independent, step-by-step NumPy transcription of METHOD.md §3."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemopose import geometry, mesh


# ----------------------------------------------------------------- reference transcription


def ref_rz(phi):
    return np.array([[math.cos(phi), -math.sin(phi), 0], [math.sin(phi), math.cos(phi), 0], [0, 0, 1]])


def ref_rx(phi):
    return np.array([[1, 0, 0], [0, math.cos(phi), -math.sin(phi)], [0, math.sin(phi), math.cos(phi)]])


def ref_project(X, a, e, theta, d, f, px, py, M):
    """METHOD.md §3, steps 1-5, one point at a time."""
    if d == 0:
        d = 0.1
    C = d * np.array([math.cos(e) * math.sin(a), -math.cos(e) * math.cos(a), math.sin(e)])
    R = ref_rx(-(math.pi / 2 - e)) @ ref_rz(-a)
    out = []
    for p in X:
        xc = R @ (np.asarray(p, dtype=np.float64) - C)
        u = M * f * xc[0] / (-xc[2])
        v = M * f * xc[1] / (-xc[2])
        u, v = math.cos(theta) * u - math.sin(theta) * v, math.sin(theta) * u + math.cos(theta) * v
        out.append((u + px, -v + py))
    return np.array(out)


angles = st.tuples(st.floats(0, 2 * math.pi), st.floats(-1.4, 1.4), st.floats(-math.pi, math.pi),
                   st.floats(1.0, 20.0))


# ----------------------------------------------------------------- tests


@settings(max_examples=60, deadline=None)
@given(angles, st.floats(100, 5000), st.floats(-300, 800), st.floats(-300, 800))
def test_project_points_matches_spec_transcription(pose, M, px, py):
    a, e, theta, d = pose
    X = np.random.default_rng(0).normal(size=(7, 3)) * 0.5
    ours = geometry.project_points(X, a, e, theta, d, focal=1.0, principal=(px, py), viewport=M)
    ref = ref_project(X, a, e, theta, d, 1.0, px, py, M)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-7)


def test_nonzero_theta_rotates_about_principal_point():
    X = np.array([[0.3, -0.2, 0.1], [0.0, 0.0, 0.0]])
    base = geometry.project_points(X, 0.7, 0.3, 0.0, 5.0, principal=(100.0, 50.0))
    rot = geometry.project_points(X, 0.7, 0.3, 0.5, 5.0, principal=(100.0, 50.0))
    # The distance to the principal point is unchanged, the angle changes by theta.
    r0 = np.linalg.norm(base - [100, 50], axis=1)
    r1 = np.linalg.norm(rot - [100, 50], axis=1)
    np.testing.assert_allclose(r0, r1, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(rot, ref_project(X, 0.7, 0.3, 0.5, 5.0, 1, 100, 50, 3000))


def test_zero_distance_quirk_uses_point_one():
    X = np.array([[0.01, 0.02, 0.03]])
    np.testing.assert_allclose(geometry.project_points(X, 1.0, 0.2, 0.1, 0.0),
                               geometry.project_points(X, 1.0, 0.2, 0.1, 0.1))


@settings(max_examples=60, deadline=None)
@given(angles)
def test_look_at_equals_spec_rotation_and_angles_round_trip(pose):
    a, e, theta, d = pose
    C = geometry.camera_center(a, e, d)
    np.testing.assert_allclose(geometry.look_at_rotation(C), ref_rx(-(math.pi / 2 - e)) @ ref_rz(-a), atol=1e-12)
    np.testing.assert_allclose(geometry.rotation_from_angles(a, e), ref_rx(-(math.pi / 2 - e)) @ ref_rz(-a), atol=1e-12)
    a2, e2, d2 = geometry.camera_angles(C)
    assert abs(math.remainder(a2 - a, 2 * math.pi)) < 1e-9
    assert abs(e2 - e) < 1e-9 and abs(d2 - d) < 1e-9
    assert 0 <= a2 < 2 * math.pi


def test_camera_angles_match_original_formula():
    # The original reads azimuth back as atan(x / z) % pi + pi * (x < 0) in PyTorch3D's
    # y-up frame (x, z) = (C_x, -C_y).
    rng = np.random.default_rng(3)
    C = rng.normal(size=(200, 3)) * 4
    az, _, _ = geometry.camera_angles(C)
    X, Z = C[:, 0], -C[:, 1]
    ref = np.arctan(X / Z) % np.pi + np.pi * (X < 0)
    np.testing.assert_allclose(az, ref, atol=1e-12)


def test_rotation_matrix_is_rz_theta_times_R():
    a, e, t = 2.1, -0.3, 0.4
    np.testing.assert_allclose(geometry.rotation_matrix(t, e, a), ref_rz(t) @ ref_rx(-(math.pi / 2 - e)) @ ref_rz(-a),
                               atol=1e-12)


def test_rotation_error_agrees_with_logm():
    rng = np.random.default_rng(7)
    for _ in range(50):
        p1, p2 = rng.uniform(-3, 3, size=3), rng.uniform(-3, 3, size=3)
        R1 = geometry.rotation_matrix(*p1)
        R2 = geometry.rotation_matrix(*p2)
        ref = np.linalg.norm(np.real(scipy.linalg.logm(R1.T @ R2))) / math.sqrt(2)
        arccos = math.acos(np.clip((np.trace(R1.T @ R2) - 1) / 2, -1, 1))
        ours = float(geometry.rotation_error(R1, R2))
        assert ours == pytest.approx(ref, abs=1e-6)
        assert ours == pytest.approx(arccos, abs=1e-6)
    assert float(geometry.rotation_error(R1, R1)) == pytest.approx(0.0, abs=1e-7)


def test_rotation_error_nan_and_inf_give_half_pi():
    R = geometry.rotation_matrix(0.1, 0.2, 0.3)
    bad = R.copy()
    bad[0, 0] = np.nan
    assert float(geometry.rotation_error(R, bad)) == pytest.approx(math.pi / 2)
    bad[0, 0] = np.inf
    assert float(geometry.rotation_error(bad, R)) == pytest.approx(math.pi / 2)


def test_batched_torch_and_differentiable():
    a = torch.tensor([0.1, 1.0, 4.0], dtype=torch.float64, requires_grad=True)
    e = torch.tensor([0.2, -0.1, 0.5], dtype=torch.float64)
    pts = torch.randn(5, 3, dtype=torch.float64)
    out = geometry.project_points(pts, a, e, torch.zeros(3, dtype=torch.float64), torch.full((3,), 5.0, dtype=torch.float64),
                                  principal=torch.tensor([[10.0, 20.0]] * 3, dtype=torch.float64))
    assert out.shape == (3, 5, 2)
    for k in range(3):
        ref = ref_project(pts.numpy(), float(a[k].detach()), float(e[k]), 0.0, 5.0, 1.0, 10.0, 20.0, 3000)
        np.testing.assert_allclose(out[k].detach().numpy(), ref, rtol=1e-10)
    assert torch.autograd.gradcheck(lambda az: geometry.project_points(pts, az, e, 0.0 * e, 5.0 + 0 * e), (a,))


def test_real_sample_projection_agrees_with_bbox(fixture_data):
    """METHOD.md §3: the real car's CAD model projected with its annotation spans x 43-473,
    y 91-256 against the annotated bbox x 45-490, y 87-246."""
    anno = np.load(fixture_data / "real" / "nemo_sample_car" / "car_annotation.npz")
    verts, _ = mesh.load_off(fixture_data / "real" / "nemo_sample_car" / "car.off")
    p = geometry.project_points(verts, anno["azimuth"], anno["elevation"], anno["theta"], anno["distance"],
                                focal=float(anno["focal"]), principal=anno["principal"],
                                viewport=float(anno["viewport"]))
    x0, y0 = p.min(0)
    x1, y1 = p.max(0)
    assert (round(x0), round(x1), round(y0), round(y1)) == (43, 473, 91, 256)
    bx0, by0, bx1, by1 = anno["bbox"]
    # Within the tolerance the spec documents (annotation noise of the real dataset).
    assert abs(x0 - bx0) < 5 and abs(x1 - bx1) < 20 and abs(y0 - by0) < 6 and abs(y1 - by1) < 12


def test_distance_units_convert_through_the_crop():
    """A crop rescales the image by r = s d / 5, so every object of a crop sits at one render
    distance (the crop module's relation), and the conversion inverts exactly."""
    from nemopose.data import crop

    for d in (0.7, 5.0, 12.3):
        for scale, crop_hw in ((1.0, (256, 672)), (0.5, (128, 336))):
            rate = scale * d / 5
            map_size = (crop_hw[0] // 8, crop_hw[1] // 8)
            render_d = geometry.render_distance(d, rate, map_size)
            assert render_d == pytest.approx(crop.render_distance_for_crop(crop_hw, scale))
            assert geometry.pascal_distance(render_d, rate, map_size) == pytest.approx(d)
    assert geometry.render_distance(5.0, 1.0, (32, 84)) == pytest.approx(5.328, abs=1e-3)   # car at scale 1
