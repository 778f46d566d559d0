"""Every compiled pose-loss backend against the PyTorch reference (nemopose.solve.score).

One suite, parametrised over the backends: "numba" (the CPU kernels of
nemopose.solve.score_numba) wherever numba is installed, "triton" where a CUDA device is
(its interpreter on the CPU is tested, more slowly, in test_score_triton.py). Checked: the
z-buffer, the losses and their gradients (1e-5 relative), the 144-pose initial scoring (the
same initial pose on the benchmark's problems), and whole solves (final poses within 0.1
degrees on well-separated problems; a batch solves as its images one at a time).
"""

import importlib.util
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nemopose import geometry, mesh
from nemopose.errors import UsageError
from nemopose.render import raster as render
from nemopose.solve import score
from nemopose.solve import solver as pose

REPO = Path(__file__).resolve().parents[1]
H, W = 20, 36


def _backends():
    out = [pytest.param("numba", marks=pytest.mark.skipif(importlib.util.find_spec("numba") is None,
                                                            reason="the numba package is not installed"))]
    out.append(pytest.param("triton", marks=pytest.mark.skipif(
        not torch.cuda.is_available() or importlib.util.find_spec("triton") is None,
        reason="compiled Triton kernels need CUDA (interpreted: test_score_triton.py)")))
    return out


BACKENDS = _backends()


def device_of(backend: str) -> torch.device:
    return torch.device("cuda" if backend == "triton" else "cpu")


def small_problem(n_vertices=200, channels=16, n_images=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    verts, faces = mesh.cuboid_mesh((-0.18, 0.18), (-0.44, 0.43), (-0.17, 0.12), n_vertices)
    verts = torch.as_tensor(verts, dtype=torch.float32)
    feats = torch.nn.functional.normalize(torch.randn(verts.shape[0], channels, generator=g), dim=1)
    maps = torch.nn.functional.normalize(torch.randn(n_images, channels, H, W, generator=g), dim=1)
    clutter = torch.nn.functional.normalize(torch.randn(channels, generator=g), dim=0)
    return verts, faces, feats, maps, clutter


def random_poses(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    az = torch.rand(n, generator=g) * 2 * np.pi
    el = torch.rand(n, generator=g) * 0.8 - 0.2
    th = (torch.rand(n, generator=g) - 0.5) * 0.6
    dist = 3.5 + 1.5 * torch.rand(n, generator=g)
    return geometry.camera_center(az, el, dist), th


def bench_problem(n_images):
    """The problems of benchmarks/bench_pose.py: the car cuboid's features rendered at random
    poses over clutter and noise, 32 x 84 maps, 128-d."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from bench_pose import make_problem
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return make_problem(n_images, 128)


def max_angle_deg(a, b) -> float:
    keys = ("azimuth", "elevation", "theta")
    diff = geometry.pose_error({k: a[k].double().numpy() for k in keys}, {k: b[k].double().numpy() for k in keys})
    return float(np.degrees(diff.max()))


# ---------------------------------------------------------------------- choosing a backend

def test_auto_picks_numba_on_the_cpu_and_torch_keeps_pytorch():
    pytest.importorskip("numba")
    verts, faces, feats, _, _ = small_problem()
    assert score.PoseScorer(verts, faces, feats, (H, W)).backend == "numba"
    assert score.PoseScorer(verts, faces, feats, (H, W), backend="torch").backend == "torch"
    # what the kernels do not implement falls back to PyTorch under "auto", raises when asked for
    assert score.PoseScorer(verts, faces, feats, (H, W), perspective_correct=True).backend == "torch"
    assert score.PoseScorer(verts, faces, feats, (H, W), method="render").backend == "torch"
    with pytest.raises(UsageError, match="perspective_correct"):
        score.PoseScorer(verts, faces, feats, (H, W), perspective_correct=True, backend="numba")
    assert pose.SolverConfig(backend="numba").backend == "numba"


def test_numba_zbuffer_is_the_pytorch_rasteriser():
    pytest.importorskip("numba")
    from nemopose.solve import score_numba

    for cull in (None, False):
        verts, faces, feats, _, _ = small_problem()
        scorer = score.PoseScorer(verts, faces, feats, (H, W), cull_backfaces=cull, backend="torch")
        centers, thetas = random_poses(8)
        shift = torch.randn(8, 2, generator=torch.Generator().manual_seed(2)) * 3
        camera = score_numba.Camera.build(scorer.verts, scorer.faces, scorer.face_orientation, scorer.camera)
        got = score_numba.nearest_faces(camera, centers, thetas, shift).reshape(-1)
        cov = render.rasterize_covered(scorer.screen(centers, thetas, shift, planar=True), scorer.faces, (H, W),
                                       cull_backfaces=scorer.face_orientation, planar=True)
        expected = torch.full((8 * H * W,), -1, dtype=torch.long)
        expected[cov.batch * H * W + cov.pixel] = cov.face
        assert int((expected >= 0).sum()) > 500
        assert torch.equal(got, expected)          # the same float32 operations: the same faces


# ---------------------------------------------------------------------- losses and gradients

@pytest.mark.parametrize("use_clutter", [True, False])
@pytest.mark.parametrize("backend", BACKENDS)
def test_losses_and_gradients_match_pytorch(backend, use_clutter):
    verts, faces, feats, maps, clutter = small_problem()
    device = device_of(backend)
    results = {}
    for name in ("torch", backend):
        scorer = score.PoseScorer(verts, faces, feats, (H, W), backend=name, device=device)
        assert scorer.backend == name
        images = scorer.prepare(maps, clutter if use_clutter else None)
        centers, thetas = random_poses(6)
        c, t = centers.to(device).requires_grad_(True), thetas.to(device).requires_grad_(True)
        shift = torch.tensor([[0.0, 0.0], [1.5, -2.0]] * 3, device=device, requires_grad=True)
        loss = scorer.losses(images, c, t, torch.tensor([0, 1, 2, 0, 1, 2], device=device), shift)
        loss.sum().backward()
        results[name] = [v.detach().cpu() for v in (loss, c.grad, t.grad, shift.grad)]
    ref, got = results["torch"], results[backend]
    assert ((ref[0] - 1).abs() > 1e-5).all()           # covered pixels count (1 = an empty render)
    assert torch.allclose(got[0], ref[0], rtol=1e-5, atol=0)
    for g_ref, g_got in zip(ref[1:], got[1:]):
        assert g_ref.abs().max() > 1e-3
        assert (g_got - g_ref).abs().max() <= 1e-5 * g_ref.abs().max()


@pytest.mark.parametrize("backend", BACKENDS)
def test_losses_without_gradient_are_the_same(backend):
    verts, faces, feats, maps, clutter = small_problem()
    device = device_of(backend)
    scorer = score.PoseScorer(verts, faces, feats, (H, W), backend=backend, device=device)
    images = scorer.prepare(maps, clutter)
    centers, thetas = (v.to(device) for v in random_poses(3))
    with torch.no_grad():
        plain = scorer.losses(images, centers, thetas, torch.arange(3, device=device))
    graded = scorer.losses(images, centers.requires_grad_(True), thetas, torch.arange(3, device=device))
    assert torch.equal(plain, graded.detach())


@pytest.mark.parametrize("backend", BACKENDS)
def test_initial_scoring_matches_pytorch_on_the_bench_problems(backend):
    """The 144-pose grid: same losses (1e-6), the same initial pose for every image."""
    verts, faces, feats, clutter, maps, _ = bench_problem(8)
    device = device_of(backend)
    out = {}
    for name in ("torch", backend):
        solver = pose.MeshPoseSolver(verts, faces, feats, (32, 84), 5.0, pose.SolverConfig(backend=name),
                                     device=device)
        assert solver.scorer.backend == name
        out[name] = solver.initial_losses(maps.to(device), clutter.to(device)).cpu()
    assert out[backend].shape == (8, 144)
    assert torch.allclose(out[backend], out["torch"], rtol=1e-6, atol=1e-6)
    assert torch.equal(out[backend].argmin(1), out["torch"].argmin(1))


# ---------------------------------------------------------------------- whole solves

@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_final_poses_match_pytorch_on_well_separated_problems(backend):
    """The benchmark's problems (the object's own features over clutter: one clear minimum),
    300 steps: the same initial pose, final poses within 0.1 degrees."""
    verts, faces, feats, clutter, maps, truth = bench_problem(4)
    device = device_of(backend)
    out = {}
    for name in ("torch", backend):
        solver = pose.MeshPoseSolver(verts, faces, feats, (32, 84), 5.0, pose.SolverConfig(backend=name),
                                     device=device)
        out[name] = solver.solve(maps.to(device), clutter.to(device))
    assert torch.equal(out[backend]["init_index"], out["torch"]["init_index"])
    assert max_angle_deg(out[backend], out["torch"]) < 0.1
    # (the trajectories part at float rounding: nearby end points, nearby losses)
    assert torch.allclose(out[backend]["loss"], out["torch"]["loss"], atol=1e-3, rtol=0)
    truth = {"azimuth": truth[:, 0], "elevation": truth[:, 1], "theta": truth[:, 2]}
    assert max_angle_deg(out[backend], truth) < 3.0                   # and they are solved


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_solves_as_its_images_one_at_a_time(backend):
    """Each pose is one kernel lane (one thread on the CPU): the batch does not change an
    image's numbers, and one image at a time needs no batch-sized buffers."""
    verts, faces, feats, maps, clutter = small_problem(n_images=3)
    device = device_of(backend)
    solver = pose.MeshPoseSolver(verts, faces, feats, (H, W), 4.0, pose.SolverConfig(steps=20, num_starts=2,
                                                                                    backend=backend), device=device)
    batch = solver.solve(maps.to(device), clutter.to(device))
    single = [solver.solve(maps[i:i + 1].to(device), clutter.to(device)) for i in range(3)]
    for key in ("azimuth", "elevation", "theta", "distance", "loss", "init_index"):
        assert torch.equal(batch[key], torch.cat([s[key] for s in single])), key


def test_numba_failure_on_first_use_falls_back_to_pytorch(monkeypatch, caplog):
    pytest.importorskip("numba")
    from nemopose.solve import score_numba

    verts, faces, feats, maps, clutter = small_problem(n_images=1)
    reference = pose.MeshPoseSolver(verts, faces, feats, (H, W), 4.0,
                                    pose.SolverConfig(steps=4, backend="torch")).solve(maps, clutter)

    def broken(*args, **kwargs):
        raise RuntimeError("no LLVM here\ndetails")

    monkeypatch.setattr(score_numba, "pose_totals", broken)
    solver = pose.MeshPoseSolver(verts, faces, feats, (H, W), 4.0, pose.SolverConfig(steps=4, backend="numba"))
    with caplog.at_level(logging.WARNING):
        result = solver.solve(maps, clutter)
    assert solver.scorer.backend == "torch"
    assert "the Numba pose loss failed (no LLVM here)" in caplog.text
    for key in ("azimuth", "elevation", "theta", "loss"):
        assert torch.equal(result[key], reference[key])
