import numpy as np
import pytest

from nemopose import constants, mesh


def test_cuboids_reproduce_the_released_meshes(fixture_data):
    """METHOD.md §4: given each released cuboid's extents, identical vertices and faces."""
    for cat in constants.CATEGORIES:
        verts, faces = mesh.load_off(fixture_data / "real" / "CAD_single" / cat / "01.off")
        extent = [(float(verts[:, i].min()), float(verts[:, i].max())) for i in range(3)]
        v2, f2 = mesh.cuboid_mesh(*extent)
        assert v2.shape == verts.shape, cat
        np.testing.assert_allclose(v2, verts, atol=1e-6, err_msg=cat)
        np.testing.assert_array_equal(f2, faces, err_msg=cat)


def test_cuboid_structure():
    verts, faces = mesh.cuboid_mesh((-1, 1), (-2, 2), (0, 1))
    assert 900 < len(verts) < 1200
    # every vertex lies on the box surface and the faces are valid triangles
    on_surface = np.isclose(np.abs(verts[:, 0]), 1) | np.isclose(np.abs(verts[:, 1]), 2) | \
        np.isclose(verts[:, 2], 0) | np.isclose(verts[:, 2], 1)
    assert on_surface.all()
    tri = verts[faces]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1) / 2
    assert (area > 0).all()
    assert area.sum() == pytest.approx(2 * (2 * 4 + 4 * 1 + 2 * 1))


def test_cuboid_extent_is_shortest_interval():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(1000, 3))
    pts[:5] = 100.0  # outliers are excluded by the 99 % coverage
    ext = mesh.cuboid_extent(pts, 0.99)
    k = int(0.99 * 1000)
    for axis, (lo, hi) in enumerate(ext):
        v = np.sort(pts[:, axis])
        widths = v[k:] - v[:-k]
        assert hi - lo == pytest.approx(widths.min())
        assert hi < 100
        assert ((pts[:, axis] >= lo) & (pts[:, axis] <= hi)).sum() >= k


def test_off_round_trip(tmp_path):
    verts, faces = mesh.cuboid_mesh((0, 1), (0, 2), (0, 3), n_vertices=200)
    path = tmp_path / "m.off"
    mesh.save_off(path, verts, faces)
    v2, f2 = mesh.load_off(path)
    np.testing.assert_allclose(v2, verts, atol=1e-6)
    np.testing.assert_array_equal(f2, faces)
    assert path.read_text().splitlines()[2].split()[0].count(".") == 1
    assert len(path.read_text().splitlines()[2].split()[0].split(".")[1]) == 16


@pytest.mark.parametrize("text, problem", [
    ("", "not an OFF file"),
    ("PLY\n3 1 0\n", "not an OFF file"),
    ("OFF\n3 1\n0 0 0\n1 0 0\n", "only 2 data lines"),
    ("OFF\nthree 1 0\n", "bad counts"),
    ("OFF\n3 1 0\n0 0 0\n1 0 x\n0 1 0\n3 0 1 2\n", "bad vertex"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n4 0 1 2 2\n", "not a triangle"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", "out of range"),
    ("OFF\n3 1 0\n0 0 0\n1 0 nan\n0 1 0\n3 0 1 2\n", "non-finite"),
])
def test_malformed_off_names_file_and_problem(tmp_path, text, problem):
    path = tmp_path / "bad.off"
    path.write_text(text)
    with pytest.raises(mesh.MeshFormatError, match=problem) as err:
        mesh.load_off(path)
    assert "bad.off" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(mesh.MeshFormatError, match="cannot read"):
        mesh.load_off(tmp_path / "nope.off")


def test_off_header_on_one_line(tmp_path):
    path = tmp_path / "a.off"
    path.write_text("OFF 3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    v, f = mesh.load_off(path)
    assert v.shape == (3, 3) and f.tolist() == [[0, 1, 2]]
