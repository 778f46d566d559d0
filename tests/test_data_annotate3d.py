"""3D annotations: visibility z-buffers, weight directions, the per-image step (METHOD.md §6.3)."""

import math

import numpy as np
import pytest

from nemopose import mesh
from nemopose.data import annotate3d as A
from nemopose.data.prepare import torch_threads


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with torch_threads(1):  # small tensors; robust on a busy machine
        yield


@pytest.fixture(scope="module")
def car(fixture_data):
    verts, faces = mesh.load_off(fixture_data / "real" / "CAD_single" / "car" / "01.off")
    anno = dict(np.load(fixture_data / "real" / "nemo_sample_car" / "car_annotation.npz"))
    return verts.astype(np.float64), faces, anno


def _poses(anno, n=6):
    for i in range(n):
        a = dict(anno)
        a["azimuth"] = (float(anno["azimuth"]) + 2 * math.pi * i / n) % (2 * math.pi)
        a["elevation"] = float(anno["elevation"]) + math.radians(12 * (i % 4))
        yield a


def test_fast_zbuffer_equals_the_original_loop(car):
    """Default coverage: identical to the original's per-triangle loop; centre coverage:
    the rasteriser's rule (equal to render.rasterize up to pixels exactly on an edge)."""
    verts, faces, anno = car
    hw = (int(anno["height"]), int(anno["width"]))
    for a in _poses(anno, 3):
        pix = A.vertex_pixels(verts, a)
        depth = A.normalised_distances(verts, A.camera_position(a))
        fast = A.zbuffer_visibility(pix, depth, faces, hw)
        np.testing.assert_array_equal(fast, A.zbuffer_visibility_reference(pix, depth, faces, hw))
        centre = A.zbuffer_visibility(pix, depth, faces, hw, coverage="centre")
        raster = A.zbuffer_visibility_raster(pix, depth, faces, hw)
        assert np.mean(centre == raster) > 0.99
        assert 0.3 < fast.mean() < 0.8          # a cuboid shows some of its sides, never all


def _grid(n):
    """An n x n grid of unit steps: (n*n, 2) points and its triangles."""
    r, c = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    pts = np.stack([r.ravel(), c.ravel()], 1)
    a = (np.arange(n - 1)[:, None] * n + np.arange(n - 1)[None]).ravel()
    faces = np.concatenate([np.stack([a, a + 1, a + n], 1), np.stack([a + n + 1, a + 1, a + n], 1)])
    return pts, faces


def test_zbuffer_occlusion_by_hand():
    """Two parallel squares: the front one hides the back one where they overlap."""
    sq, faces = _grid(11)
    n = len(sq)
    pix = np.concatenate([sq * 4 + 8, sq * 4 + 20]).astype(np.int64)  # (2n, 2) row, col
    depth = np.concatenate([np.zeros(n), np.ones(n)])   # first square in front
    all_faces = np.concatenate([faces, faces + n])
    vis = A.zbuffer_visibility(pix, depth, all_faces, (80, 80), coverage="centre")
    assert vis[:n].all()                                # front square entirely visible
    back = pix[n:]
    covered = ((back >= 8) & (back <= 48)).all(1)
    assert not vis[n:][covered].any() and vis[n:][~covered].all()
    np.testing.assert_array_equal(A.zbuffer_visibility(pix, depth, all_faces, (80, 80)),
                                  A.zbuffer_visibility_reference(pix, depth, all_faces, (80, 80)))


def test_sphere_fit_directions_degenerate_on_cuboids(car):
    """The original's directions on a cuboid: towards the CAD origin (coplanar neighbours),
    (1, 0, 0) where a vertex has only two neighbours (two corners of each face grid)."""
    verts, faces, _ = car
    d = A.sphere_fit_directions(verts, faces)
    radial = -verts / np.linalg.norm(verts, axis=1, keepdims=True)
    two = np.array([len(n) <= 2 for n in A._neighbours(len(verts), faces)])
    assert two.sum() == 12
    np.testing.assert_allclose(d[~two], radial[~two], atol=1e-12)
    np.testing.assert_array_equal(d[two], np.tile([1.0, 0, 0], (12, 1)))


def test_sphere_fit_directions_find_the_centre_of_a_sphere():
    """On a mesh sampled from a sphere the fitted centre is the sphere's centre."""
    centre, radius = np.array([0.3, -0.2, 0.1]), 0.7
    th, ph = np.meshgrid(np.linspace(0.3, math.pi - 0.3, 9), np.linspace(0, 2 * math.pi, 16, endpoint=False),
                         indexing="ij")
    pts = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1).reshape(-1, 3)
    verts = centre + radius * pts
    faces = []
    for i in range(8):
        for j in range(16):
            a, b, c, e = i * 16 + j, i * 16 + (j + 1) % 16, (i + 1) * 16 + j, (i + 1) * 16 + (j + 1) % 16
            faces += [(a, b, c), (b, e, c)]
    d = A.sphere_fit_directions(verts, np.array(faces))
    inner = np.arange(16, 16 * 8)                       # rows with neighbours on both sides
    np.testing.assert_allclose(d[inner], -pts[inner], atol=1e-6)


def test_outward_directions_ignore_winding():
    verts, faces = mesh.cuboid_mesh((-1, 2), (-0.5, 0.5), (0, 1), n_vertices=300)
    rng = np.random.default_rng(0)
    flipped = faces.copy()
    flip = rng.random(len(faces)) < 0.5
    flipped[flip] = flipped[flip][:, ::-1]
    n = A.outward_directions(verts, flipped)
    np.testing.assert_allclose(n, A.outward_directions(verts, faces))
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1)
    # Each vertex of a face grid gets that face's outward axis.
    for axis, (lo, hi) in enumerate([(-1, 2), (-0.5, 0.5), (0, 1)]):
        on_lo = np.isclose(verts[:, axis], lo) & np.isclose(np.abs(n[:, axis]), 1)
        on_hi = np.isclose(verts[:, axis], hi) & np.isclose(np.abs(n[:, axis]), 1)
        assert on_lo.any() and on_hi.any()
        assert (n[on_lo, axis] == -1).all() and (n[on_hi, axis] == 1).all()
    assert np.isclose(np.abs(n).max(1), 1).all()        # every normal is an axis


def test_weights():
    verts, faces = mesh.cuboid_mesh((-1, 1), (-1, 1), (-1, 1), n_vertices=200)
    camera = np.array([1000.0, 0.0, 0.0])
    normal = A.vertex_weights(A.vertex_directions(verts, faces, "normal"), verts, camera, "normal")
    n = A.outward_directions(verts, faces)
    assert np.allclose(normal[np.isclose(n[:, 0], 1)], 1, atol=1e-3)      # facing the camera
    assert np.allclose(normal[np.isclose(np.abs(n[:, 1]), 1)], 0, atol=1e-2)  # edge-on
    original = A.vertex_weights(A.vertex_directions(verts, faces, "original"), verts, camera, "original")
    d = A.sphere_fit_directions(verts, faces)
    toward = -camera - verts                             # the original's camera at -C
    expected = np.abs((d * toward).sum(1)) / np.linalg.norm(toward, axis=1)
    np.testing.assert_allclose(original, expected)
    assert ((0 <= original) & (original <= 1)).all()


def test_annotate_real_car(car):
    verts, faces, anno = car
    target = A.MeshForAnnotation(verts, faces, A.vertex_directions(verts, faces))
    out = A.annotate_vertices(anno, target)
    kp, vis = out["cropped_kp_list"], out["visible"]
    assert kp.shape == (len(verts), 2) and vis.dtype == bool
    assert (kp >= 0).all() and (kp[:, 0] <= 255).all() and (kp[:, 1] <= 671).all()
    pix = A.vertex_pixels(verts, anno)
    assert A.inside_box(pix, anno["box_ori"])[vis].all()
    # Visible vertices land inside the object's box in the crop (the map is box to box).
    y0, y1, x0, x1 = anno["box_obj"][:4]
    assert ((kp[vis, 0] >= y0) & (kp[vis, 0] <= y1) & (kp[vis, 1] >= x0) & (kp[vis, 1] <= x1)).all()
    # Annotated visibility is per side: the side facing the camera is visible.
    n = A.outward_directions(verts, faces)
    facing = (n * (A.camera_position(anno) - verts)).sum(1) > 0.2 * np.linalg.norm(A.camera_position(anno))
    inside = A.inside_box(pix, anno["box_ori"])
    assert vis[facing & inside].mean() > 0.9
    lo, hi = verts.min(0), verts.max(0)
    on_edge = (np.isclose(verts, lo) | np.isclose(verts, hi)).sum(1) > 1   # shared with another side
    away = n @ A.camera_position(anno) < -0.5
    assert away.sum() > 100 and not vis[away & ~on_edge].any()


def test_azimuth_bins():
    keep = A.azimuth_bin_filter("TFFTTFFT")
    assert keep(math.radians(10)) and not keep(math.radians(50)) and keep(math.radians(150))
    assert not keep(math.radians(45))                    # a bin edge is in no bin (original)
    with pytest.raises(ValueError):
        A.azimuth_bin_filter("TFX")
