"""The rasteriser and feature renderer: against a slow reference, the original's output,
finite differences, and edge cases."""

import math

import numpy as np
import pytest
import torch

from nemopose import geometry, mesh
from nemopose.render import raster as render


def random_soup(batch, n_faces, size, seed, dtype=torch.float64):
    """Random overlapping triangles of a few pixels, random depths, some partly outside."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    centers = torch.rand(batch, n_faces, 1, 2, generator=g, dtype=dtype) * torch.tensor([w + 4, h + 4], dtype=dtype) - 2
    offsets = (torch.rand(batch, n_faces, 3, 2, generator=g, dtype=dtype) - 0.5) * 8
    xy = (centers + offsets).reshape(batch, n_faces * 3, 2)
    z = (torch.rand(batch, n_faces, 1, generator=g, dtype=dtype) * 5 + 1).repeat(1, 1, 3)
    z = z + torch.rand(batch, n_faces, 3, generator=g, dtype=dtype) * 0.5   # tilted faces
    verts = torch.cat([xy, z.reshape(batch, -1, 1)], -1)
    faces = torch.arange(n_faces * 3).reshape(n_faces, 3)
    return verts, faces


def car_screen(poses, size=(32, 84), dtype=torch.float64):
    verts, faces = mesh.cuboid_mesh((-0.184, 0.184), (-0.44, 0.43), (-0.168, 0.12))
    poses = torch.as_tensor(poses, dtype=dtype)
    cam = render.RenderCamera(size, render_size=max(size))
    C = geometry.camera_center(poses[:, 0], poses[:, 1], poses[:, 3])
    return render.project_vertices(torch.as_tensor(verts, dtype=dtype), C, poses[:, 2], cam), torch.as_tensor(faces)


def compare_fragments(fast, ref, screen, faces, min_agree=0.995):
    same = fast.pix_to_face == ref.pix_to_face
    assert same.float().mean() >= min_agree
    # where the faces agree the barycentrics and depths agree
    torch.testing.assert_close(fast.bary[same], ref.bary[same], atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.depth[same], ref.depth[same], atol=1e-5, rtol=1e-6)
    # where they differ both cover the pixel at (nearly) the same depth: a tie on an edge
    diff = ~same
    assert (fast.pix_to_face[diff] >= 0).all() and (ref.pix_to_face[diff] >= 0).all()
    torch.testing.assert_close(fast.depth[diff], ref.depth[diff], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("perspective_correct", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rasterize_matches_reference_on_random_soups(seed, perspective_correct):
    screen, faces = random_soup(3, 60, (20, 28), seed)
    fast = render.rasterize(screen, faces, (20, 28), perspective_correct=perspective_correct)
    ref = render.rasterize_reference(screen, faces, (20, 28), perspective_correct=perspective_correct)
    assert fast.mask.any()
    compare_fragments(fast, ref, screen, faces)


def test_rasterize_matches_reference_on_cuboid_poses():
    poses = [[0.3, 0.2, 0.0, 5.0], [2.0, 0.6, 0.4, 4.5], [4.1, -0.2, -0.3, 6.0]]
    screen, faces = car_screen(poses, (16, 40))
    fast = render.rasterize(screen, faces, (16, 40))
    ref = render.rasterize_reference(screen, faces, (16, 40))
    assert fast.mask.float().mean() > 0.2
    compare_fragments(fast, ref, screen, faces)
    # the visible surface is the near one: every covered pixel's depth is the minimum over
    # all faces that contain it (checked through the reference, which tests every face)
    assert torch.equal(fast.mask, ref.mask)


def test_float32_agrees_with_float64():
    screen, faces = car_screen([[1.0, 0.3, 0.2, 5.0], [5.0, 0.1, -0.2, 5.5]])
    f64 = render.rasterize(screen, faces, (32, 84))
    f32 = render.rasterize(screen.float(), faces, (32, 84))
    assert (f64.pix_to_face == f32.pix_to_face).float().mean() > 0.995


def test_batched_equals_one_at_a_time():
    screen, faces = car_screen([[0.3, 0.2, 0.0, 5.0], [1.9, 0.5, 0.35, 5.5], [3.3, -0.1, -0.3, 4.6]])
    batched = render.rasterize(screen, faces, (32, 84))
    for b in range(3):
        single = render.rasterize(screen[b:b + 1], faces, (32, 84))
        assert torch.equal(single.pix_to_face[0], batched.pix_to_face[b])
        torch.testing.assert_close(single.bary[0], batched.bary[b])


def test_direct_crop_render_equals_square_render_cropped():
    """METHOD.md §3: render S x S with the principal at its centre, crop to (h, w) == render at (h, w)."""
    verts, faces = mesh.cuboid_mesh((-0.184, 0.184), (-0.44, 0.43), (-0.168, 0.12))
    verts = torch.as_tensor(verts)
    feats = torch.randn(len(verts), 5, dtype=torch.float64)
    C = geometry.camera_center(torch.tensor([0.7, 3.0]), torch.tensor([0.3, 0.1]), torch.tensor([5.0, 4.8])).double()
    theta = torch.tensor([0.1, -0.4], dtype=torch.float64)
    square = render.render_features(verts, torch.as_tensor(faces), feats, C, theta, render.RenderCamera((84, 84)))
    crop = render.render_features(verts, torch.as_tensor(faces), feats, C, theta, render.RenderCamera((32, 84), 84))
    torch.testing.assert_close(square[:, :, 26:58, :], crop)


def test_golden_render_of_the_original(fixture_data):
    """The original (PyTorch3D 0.7.6) render of random features on the car cuboid.

    The golden maps match perspective-correct barycentrics (PyTorch3D 0.7's default for
    perspective cameras) to float precision; the screen-space default differs from them
    by the small perspective correction only.
    """
    gold = np.load(fixture_data / "golden" / "render_car_cuboid.npz")
    verts, faces = mesh.load_off(fixture_data / "real" / "CAD_single" / "car" / "01.off")
    poses = torch.as_tensor(gold["poses"])
    C = geometry.camera_center(poses[:, 0], poses[:, 1], poses[:, 3])
    cam = render.RenderCamera((32, 84), render_size=84)
    expected = gold["maps"]
    cov_gold = np.abs(expected).sum(1) > 0
    for perspective_correct, tol in [(True, 1e-4), (False, 2e-2)]:
        maps = render.render_features(torch.as_tensor(verts), torch.as_tensor(faces),
                                      torch.as_tensor(gold["vertex_features"]), C, poses[:, 2], cam,
                                      perspective_correct=perspective_correct).numpy()
        cov = np.abs(maps).sum(1) > 0
        # same covered pixels but for a few on the silhouette
        assert (cov ^ cov_gold).sum() <= 0.002 * cov_gold.sum()
        both = cov & cov_gold
        err = np.abs(maps - expected).max(1)[both]
        # equal where the face agrees; a pixel centre on a shared edge may pick the other
        # face, which gives nearly the same value
        assert np.mean(err < tol) > 0.995, (perspective_correct, np.mean(err < tol))
        assert err.max() < 2e-2


def test_gradients_match_finite_differences():
    verts, faces = mesh.cuboid_mesh((-0.184, 0.184), (-0.44, 0.43), (-0.168, 0.12))
    verts, faces = torch.as_tensor(verts), torch.as_tensor(faces)
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(len(verts), 4, generator=g, dtype=torch.float64)
    target = torch.randn(2, 4, 32, 84, generator=g, dtype=torch.float64)
    cam = render.RenderCamera((32, 84), 84)
    C0 = geometry.camera_center(torch.tensor([0.8, 2.5]), torch.tensor([0.25, 0.4]), torch.tensor([5.0, 5.3])).double()
    t0 = torch.tensor([0.15, -0.2], dtype=torch.float64)

    def loss(C, t):
        return (render.render_features(verts, faces, feats, C, t, cam) * target).sum()

    C = C0.clone().requires_grad_(True)
    t = t0.clone().requires_grad_(True)
    loss(C, t).backward()
    eps = 1e-7
    fd_C = torch.zeros_like(C0)
    for i in range(2):
        for j in range(3):
            dp, dm = C0.clone(), C0.clone()
            dp[i, j] += eps
            dm[i, j] -= eps
            fd_C[i, j] = (loss(dp, t0) - loss(dm, t0)) / (2 * eps)
    fd_t = torch.zeros_like(t0)
    for i in range(2):
        dp, dm = t0.clone(), t0.clone()
        dp[i] += eps
        dm[i] -= eps
        fd_t[i] = (loss(C0, dp) - loss(C0, dm)) / (2 * eps)
    torch.testing.assert_close(C.grad, fd_C, rtol=1e-4, atol=1e-4 * fd_C.abs().max().item())
    torch.testing.assert_close(t.grad, fd_t, rtol=1e-4, atol=1e-4 * fd_t.abs().max().item())
    assert fd_C.abs().max() > 1.0 and fd_t.abs().max() > 1.0   # a real signal was compared


def test_barycentric_gradient_wrt_vertices():
    screen, faces = random_soup(1, 8, (10, 12), 3)
    screen.requires_grad_(True)
    frag = render.rasterize(screen, faces, (10, 12))
    assert frag.mask.any()
    weights = torch.randn(frag.bary.shape, dtype=torch.float64)

    def f(v):
        return (render.rasterize(v, faces, (10, 12)).bary * weights).sum()

    torch.autograd.gradcheck(f, (screen,), eps=1e-7, atol=1e-5)


def test_faces_behind_the_camera_are_dropped():
    # One face in front, one straddling the camera plane, one fully behind.
    verts = torch.tensor([[[2.0, 2.0, 1.0], [9.0, 2.0, 1.0], [2.0, 9.0, 1.0],
                           [1.0, 1.0, 2.0], [10.0, 1.0, -1.0], [1.0, 10.0, 2.0],
                           [1.0, 1.0, -2.0], [10.0, 1.0, -2.0], [1.0, 10.0, -2.0]]], dtype=torch.float64)
    faces = torch.arange(9).reshape(3, 3)
    frag = render.rasterize(verts, faces, (12, 12))
    assert set(frag.pix_to_face.unique().tolist()) <= {-1, 0}
    assert (frag.depth[frag.mask] > 0).all()
    ref = render.rasterize_reference(verts, faces, (12, 12))
    assert torch.equal(frag.pix_to_face, ref.pix_to_face)


def test_empty_image_and_its_gradient():
    screen, faces = car_screen([[0.3, 0.2, 0.0, 5.0]])
    screen = (screen + torch.tensor([500.0, 0.0, 0.0], dtype=torch.float64)).requires_grad_(True)
    frag = render.rasterize(screen, faces, (32, 84))
    assert (frag.pix_to_face == -1).all() and (frag.bary == 0).all() and (frag.depth == 0).all()
    feats = torch.randn(int(faces.max()) + 1, 3, dtype=torch.float64)
    out = render.interpolate_vertex_features(frag, faces, feats)
    assert out.shape == (1, 3, 32, 84) and (out == 0).all()
    out.sum().backward()
    assert (screen.grad == 0).all()


def test_degenerate_faces_are_ignored():
    verts = torch.tensor([[[1.0, 1.0, 1.0], [5.0, 5.0, 1.0], [9.0, 9.0, 1.0]]], dtype=torch.float64)
    frag = render.rasterize(verts, torch.tensor([[0, 1, 2]]), (10, 10))
    assert not frag.mask.any()


@pytest.mark.parametrize("args, match", [
    ((torch.zeros(5, 3), torch.zeros(1, 3, dtype=torch.long), (4, 4)), "verts_screen"),
    ((torch.zeros(1, 5, 2), torch.zeros(1, 3, dtype=torch.long), (4, 4)), "verts_screen"),
    ((torch.zeros(1, 5, 3), torch.zeros(1, 4, dtype=torch.long), (4, 4)), "faces"),
    ((torch.zeros(1, 5, 3), torch.zeros(1, 3), (4, 4)), "integer"),
    ((torch.zeros(1, 5, 3), torch.tensor([[0, 1, 9]]), (4, 4)), "out of range"),
    ((torch.zeros(1, 5, 3), torch.zeros(1, 3, dtype=torch.long), (0, 4)), "positive"),
    ((torch.zeros(1, 5, 3), torch.zeros(1, 3, dtype=torch.long), 7), "image_size"),
])
def test_bad_inputs_raise(args, match):
    with pytest.raises(ValueError, match=match):
        render.rasterize(*args)


def test_per_batch_vertex_features_and_renderer_module():
    verts, faces = mesh.cuboid_mesh((-0.184, 0.184), (-0.44, 0.43), (-0.168, 0.12))
    feats = torch.randn(len(verts), 6)
    module = render.FeatureRenderer(verts, faces, feats, render.RenderCamera((32, 84)))
    C = geometry.camera_center(torch.tensor([0.5, 2.0]), torch.tensor([0.2, 0.3]), torch.tensor([5.0, 5.0])).float()
    theta = torch.zeros(2)
    shared = module(C, theta)
    per_batch = render.interpolate_vertex_features(module.rasterize(C, theta), module.faces,
                                                   torch.stack([feats, 2 * feats]))
    torch.testing.assert_close(per_batch[0], shared[0])
    torch.testing.assert_close(per_batch[1], 2 * shared[1])
    with pytest.raises(ValueError, match="vertex_features"):
        render.FeatureRenderer(verts, faces, feats[:10], render.RenderCamera((32, 84)))


def test_render_camera_focal_length():
    cam = render.RenderCamera((32, 84))
    assert cam.side == 84
    assert cam.focal == pytest.approx(42 / math.tan(math.radians(6)))
    assert cam.principal == (42.0, 16.0)
