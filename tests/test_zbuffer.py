"""The rasteriser's fast paths against the plain ones: back-face culling of closed convex
meshes (same images), the packed depth/face z-buffer key (same winners as two passes), the
covered-pixel and planar entry points (same numbers as rasterize), the planar projection,
and the pose scorer's batch independence."""

import math

import numpy as np
import pytest
import torch

from nemopose import geometry, mesh
from nemopose.solve import solver as pose, score
from nemopose.render import raster as render, zbuffer

CAR_EXTENT = ((-0.18409, 0.18409), (-0.44080, 0.43363), (-0.16812, 0.12016))


def random_poses(n, seed, distance=(3.0, 7.0)):
    """Camera poses all around the object: azimuth, elevation, theta, distance (n, 4)."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi,
                        torch.rand(n, generator=g, dtype=torch.float64) * 2.6 - 1.3,
                        (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 1.2,
                        distance[0] + (distance[1] - distance[0]) * torch.rand(n, generator=g, dtype=torch.float64)], 1)


def screen_at(verts, poses, size, dtype):
    cam = render.RenderCamera(size)
    C = geometry.camera_center(poses[:, 0], poses[:, 1], poses[:, 3])
    return render.project_vertices(torch.as_tensor(verts, dtype=dtype), C.to(dtype), poses[:, 2].to(dtype), cam)


def facing_camera(screen, faces, orientation, image, face):
    """Whether face ``face[i]`` faces the camera of image ``image[i]``: its screen-space
    signed area has the opposite sign of its outward orientation (see render.rasterize)."""
    tri = screen[image.unsqueeze(1), faces[face]].double()                       # (n, 3, 3)
    area = ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
            - (tri[:, 2, 0] - tri[:, 0, 0]) * (tri[:, 1, 1] - tri[:, 0, 1]))
    return area * orientation[face] < 0


def random_tables(n_verts, n_maps, seed, channels=16):
    """Unit vertex features (V, C), feature maps (n_maps, C, 32, 84) and a clutter vector."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.nn.functional.normalize(torch.randn(n_verts, channels, generator=g), dim=1)
    maps = torch.nn.functional.normalize(torch.randn(n_maps, channels, 32, 84, generator=g), dim=1)
    clutter = torch.nn.functional.normalize(torch.randn(channels, generator=g), dim=0)
    return feats, maps, clutter


@pytest.fixture(scope="module")
def car():
    verts, faces = mesh.cuboid_mesh(*CAR_EXTENT)
    return verts, torch.as_tensor(faces), torch.as_tensor(mesh.convex_face_orientation(verts, faces))


# ----------------------------------------------------------------------------- orientation


def test_convex_face_orientation_points_out_of_every_released_cuboid(fixture_data):
    for path in sorted((fixture_data / "real" / "CAD_single").glob("*/01.off")):
        verts, faces = mesh.load_off(path)
        orientation = mesh.convex_face_orientation(verts, faces)
        assert orientation is not None, path
        tri = verts[faces].astype(np.float64)
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]) * orientation[:, None]
        # outward: every vertex of the (convex) mesh is behind every face's plane
        height = normal @ verts.T.astype(np.float64) - np.einsum("fi,fi->f", normal, tri[:, 0])[:, None]
        assert height.max() <= 1e-9 and (np.abs(orientation) == 1).all(), path
        # the winding is not consistently outward: both signs occur
        assert (orientation > 0).any() and (orientation < 0).any()


def test_convex_face_orientation_rejects_open_and_concave_meshes():
    verts, faces = mesh.cuboid_mesh((0, 1), (0, 2), (0, 3), n_vertices=200)
    assert mesh.convex_face_orientation(verts, faces) is not None
    assert mesh.convex_face_orientation(verts, faces[:-2]) is None               # a hole
    dented = verts.copy()
    inner = np.flatnonzero((dented[:, 2] == 0) & (dented[:, 0] > 0.2) & (dented[:, 0] < 0.8)
                           & (dented[:, 1] > 0.2) & (dented[:, 1] < 1.8))[0]
    dented[inner, 2] = 0.3                                                        # pushed inwards
    assert mesh.convex_face_orientation(dented, faces) is None
    two = np.concatenate([verts, verts + 5.0])                                    # two closed boxes
    assert mesh.convex_face_orientation(two, np.concatenate([faces, faces + len(verts)])) is None


def test_scorer_culls_only_closed_convex_meshes(car):
    verts, faces, _ = car
    feats = torch.nn.functional.normalize(torch.randn(len(verts), 8), dim=1)
    assert score.PoseScorer(verts, faces, feats, (32, 84)).cull_backfaces
    assert not score.PoseScorer(verts, faces, feats, (32, 84), cull_backfaces=False).cull_backfaces
    with pytest.raises(ValueError, match="closed convex"):
        score.PoseScorer(verts, faces[:-2], feats, (32, 84), cull_backfaces=True)
    assert not score.PoseScorer(verts, faces[:-2], feats, (32, 84)).cull_backfaces


# ----------------------------------------------------------------------------- culling


@pytest.mark.parametrize("perspective_correct", [False, True])
def test_culling_gives_the_same_images_from_outside(car, perspective_correct):
    """120 poses all around the car cuboid (elevations to +-75 degrees, in-plane rotations,
    3 to 7 units away): in float64 every pixel keeps its face; in float32 all but pixel
    centres on the silhouette, where a front and a back face meet at the same depth (about
    one pixel in a million covered ones: 1 to 2 of 3.3 million over 2000 such poses)."""
    verts, faces, orientation = car
    poses = random_poses(120, seed=1)
    for dtype, max_ties in [(torch.float64, 0), (torch.float32, 3)]:
        screen = screen_at(verts, poses, (32, 84), dtype)
        plain = render.rasterize(screen, faces, (32, 84), perspective_correct=perspective_correct)
        culled = render.rasterize(screen, faces, (32, 84), perspective_correct=perspective_correct,
                                  cull_backfaces=orientation)
        assert plain.mask.float().mean() > 0.1
        assert torch.equal(plain.mask, culled.mask)
        diff = plain.pix_to_face != culled.pix_to_face
        assert int(diff.sum()) <= max_ties, (dtype, int(diff.sum()))
        # a tie: the plain winner is seen from behind, at the depth of the front one (to float32)
        image = torch.nonzero(diff)[:, 0]
        assert not facing_camera(screen, faces, orientation, image, plain.pix_to_face[diff]).any()
        assert facing_camera(screen, faces, orientation, image, culled.pix_to_face[diff]).all()
        torch.testing.assert_close(plain.depth[diff], culled.depth[diff], atol=1e-5, rtol=1e-5)
        same = ~diff
        assert torch.equal(plain.bary[same], culled.bary[same])
        assert torch.equal(plain.depth[same], culled.depth[same])


def test_culling_with_the_wrong_orientation_removes_the_visible_faces(car):
    verts, faces, orientation = car
    screen = screen_at(verts, random_poses(8, seed=2), (32, 84), torch.float64)
    plain = render.rasterize(screen, faces, (32, 84))
    wrong = render.rasterize(screen, faces, (32, 84), cull_backfaces=-orientation)
    assert (wrong.pix_to_face[plain.mask] != plain.pix_to_face[plain.mask]).float().mean() > 0.9


def test_no_culling_where_the_mesh_reaches_the_near_plane(car):
    """A camera inside the cuboid sees its inside (all faces from behind): images whose
    vertices are not all in front of the near plane are rasterised without culling."""
    verts, faces, orientation = car
    cam = render.RenderCamera((32, 84))
    center = torch.tensor([[0.01, 0.02, 0.0], [0.0, -6.0, 1.0]], dtype=torch.float64)   # inside, outside
    screen = render.project_vertices(torch.as_tensor(verts), center, torch.zeros(2, dtype=torch.float64), cam)
    plain = render.rasterize(screen, faces, (32, 84))
    culled = render.rasterize(screen, faces, (32, 84), cull_backfaces=orientation)
    assert plain.mask[0].any()
    assert torch.equal(plain.pix_to_face, culled.pix_to_face)


def test_solver_results_with_and_without_culling(car):
    verts, faces, _ = car
    g = torch.Generator().manual_seed(3)
    feats = torch.nn.functional.normalize(torch.randn(len(verts), 16, generator=g), dim=1)
    clutter = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    poses = torch.tensor([[0.6, 0.25, 0.1, 5.0], [2.2, 0.4, -0.2, 5.4], [4.0, 0.1, 0.25, 4.7]])
    C = geometry.camera_center(poses[:, 0], poses[:, 1], poses[:, 3])
    maps = render.render_features(torch.as_tensor(verts, dtype=torch.float32), faces, feats, C, poses[:, 2],
                                  render.RenderCamera((32, 84)))
    maps = torch.nn.functional.normalize(maps + clutter.reshape(1, -1, 1, 1) * (maps.abs().sum(1, keepdim=True) == 0)
                                         + 0.05 * torch.randn(maps.shape, generator=g), dim=1)
    on = pose.solve_pose(maps, verts, faces, feats, clutter, 5.0, steps=60)
    off = pose.solve_pose(maps, verts, faces, feats, clutter, 5.0, steps=60, cull_backfaces=False)
    assert torch.equal(on["init_index"], off["init_index"])
    err = geometry.pose_error({k: on[k].double().numpy() for k in ("azimuth", "elevation", "theta")},
                              {k: off[k].double().numpy() for k in ("azimuth", "elevation", "theta")})
    assert np.degrees(err).max() < 0.1
    assert np.abs(on["distance"].numpy() - off["distance"].numpy()).max() < 1e-3


# ----------------------------------------------------------------------------- fast paths


def test_packed_depth_key_picks_the_same_faces_as_two_passes():
    """float32 depths: one scatter-min of (depth bits, face) keys; float64: two passes.
    The same float32 values (exactly representable in float64) give the same winners,
    exact depth ties included (the lower face index wins)."""
    g = torch.Generator().manual_seed(4)
    n, n_pix, n_faces = 20000, 3000, 500
    pix = torch.randint(0, n_pix, (n,), generator=g)
    z = (torch.randint(1, 50, (n,), generator=g).float() / 7).float()            # many exact ties
    keep = torch.rand(n, generator=g) > 0.3
    face = torch.randint(0, n_faces, (n,), generator=g)
    packed = zbuffer._depth_test(pix, z, keep, face, n_pix, n_faces, 1e-6)
    two_pass = zbuffer._depth_test(pix, z.double(), keep, face, n_pix, n_faces, 1e-6)
    assert torch.equal(packed[0], two_pass[0]) and torch.equal(packed[1], two_pass[1])
    # against the definition, pixel by pixel
    best = {}
    for p, d, k, f in zip(pix.tolist(), z.tolist(), keep.tolist(), face.tolist()):
        if k and (p not in best or (d, f) < best[p]):
            best[p] = (d, f)
    assert packed[0].tolist() == sorted(best)
    assert packed[1].tolist() == [best[p][1] for p in sorted(best)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_covered_and_planar_entry_points_match_rasterize(car, dtype):
    verts, faces, orientation = car
    poses = random_poses(6, seed=5)
    screen = screen_at(verts, poses, (32, 84), dtype)
    dense = render.rasterize(screen, faces, (32, 84), cull_backfaces=orientation)
    covered = render.rasterize_covered(screen, faces, (32, 84), cull_backfaces=orientation)
    planar = render.rasterize_covered(screen.permute(2, 0, 1).contiguous(), faces, (32, 84),
                                      cull_backfaces=orientation, planar=True)
    for frag in (covered.to_fragments(), planar.to_fragments()):
        assert torch.equal(frag.pix_to_face, dense.pix_to_face)
        assert torch.equal(frag.bary, dense.bary) and torch.equal(frag.depth, dense.depth)
    flat = covered.batch * (32 * 84) + covered.pixel
    assert torch.equal(covered.face, dense.pix_to_face.reshape(-1)[flat])
    assert torch.equal(covered.vertex, faces[covered.face].t())
    # the barycentrics' hand-written backward against autograd through the plain formula
    screen = screen.detach().requires_grad_(True)
    weights = torch.randn(3, covered.face.shape[0], dtype=dtype)
    (render.rasterize_covered(screen, faces, (32, 84)).bary * weights).sum().backward()
    fast = screen.grad.clone()
    screen.grad = None
    corners = screen.reshape(-1, 3)[(covered.vertex + covered.batch * screen.shape[1]).t().reshape(-1)].reshape(-1, 3, 3)
    col = (covered.pixel % 84).to(dtype) + 0.5
    row = torch.div(covered.pixel, 84, rounding_mode="floor").to(dtype) + 0.5
    plain = render._barycentric(corners[..., 0], corners[..., 1], col, row)
    (plain * weights.t()).sum().backward()
    torch.testing.assert_close(fast, screen.grad, rtol=1e-4, atol=1e-4 if dtype == torch.float32 else 1e-9)


def test_planar_projection_is_the_camera_model_and_batch_independent():
    g = torch.Generator().manual_seed(6)
    points = torch.rand(500, 3, generator=g, dtype=torch.float64) - 0.5
    poses = random_poses(9, seed=7)
    center = geometry.camera_center(poses[:, 0], poses[:, 1], poses[:, 3])
    principal = torch.rand(9, 2, generator=g, dtype=torch.float64) * 40
    planes = geometry.project_to_screen_planes(points, center, poses[:, 2], 400.0, principal)
    ref = geometry.project_to_screen(points, center, poses[:, 2], 400.0, principal)
    torch.testing.assert_close(planes, ref.permute(2, 0, 1), rtol=1e-12, atol=1e-9)
    single = geometry.project_to_screen_planes(points.float(), center[4:5].float(), poses[4:5, 2].float(), 400.0,
                                               principal[4:5].float())
    batched = geometry.project_to_screen_planes(points.float(), center.float(), poses[:, 2].float(), 400.0,
                                                principal.float())
    assert torch.equal(single[:, 0], batched[:, 4])


def test_scorer_losses_and_gradients_do_not_depend_on_the_batch(car):
    """What makes the batched solver the same as one image at a time, to the bit."""
    verts, faces, _ = car
    feats, maps, clutter = random_tables(len(verts), 4, seed=8)
    scorer = score.PoseScorer(verts, faces, feats, (32, 84))
    poses = random_poses(4, seed=9, distance=(4.5, 5.5)).float()
    center = geometry.camera_center(poses[:, 0], poses[:, 1], poses[:, 3])

    def loss_and_grads(images, c, t, index):
        c, t = c.clone().requires_grad_(True), t.clone().requires_grad_(True)
        loss = scorer.losses(images, c, t, index)
        loss.sum().backward()
        return loss.detach(), c.grad, t.grad

    batched = loss_and_grads(scorer.prepare(maps, clutter), center, poses[:, 2], torch.arange(4))
    for i in range(4):
        single = loss_and_grads(scorer.prepare(maps[i:i + 1], clutter), center[i:i + 1], poses[i:i + 1, 2],
                                torch.zeros(1, dtype=torch.long))
        for a, b in zip(single, batched):
            assert torch.equal(a[0], b[i])


def test_per_step_loss_equals_the_initial_grid_loss(car):
    """The two covered-pixel layouts of the loss (the optimiser's and the initial grid's)."""
    verts, faces, _ = car
    feats, maps, clutter = random_tables(len(verts), 2, seed=10)
    solver = pose.MeshPoseSolver(verts, faces, feats, (32, 84), 5.0)
    for use_clutter in (clutter, None):
        images = solver.scorer.prepare(maps, use_clutter)
        grid = solver.scorer.grid_losses(images, solver.init_fragments)                   # (2, K)
        k = solver.init_centers.shape[0]
        index = torch.arange(2).repeat_interleave(k)
        with torch.no_grad():
            step = solver.scorer.losses(images, solver.init_centers.repeat(2, 1), solver.init_thetas.repeat(2), index)
        torch.testing.assert_close(step.reshape(2, k), grid, atol=2e-6, rtol=0)
        with torch.no_grad():
            dense = solver.scorer.fragment_losses(solver.init_fragments, torch.zeros(k, dtype=torch.long), images)
        torch.testing.assert_close(dense, grid[0], atol=2e-6, rtol=0)
