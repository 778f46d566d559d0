"""The Triton pose loss (nemopose.solve.score_triton) against the plain-PyTorch reference.

Without a GPU the kernels run on the CPU through Triton's interpreter (TRITON_INTERPRET=1,
set by conftest.py before triton is imported), the same kernel source a GPU compiles; on a
CUDA machine these tests run the compiled kernels against the PyTorch path on the GPU.
"""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

if os.environ.get("CI") == "true":       # CI installs it (tests/requirements.txt): never skip there
    import triton  # noqa: F401
pytest.importorskip("triton", minversion="3.1",
                    reason="triton is not installed, so the Triton pose loss is not tested: "
                           "pip install -r tests/requirements.txt (CPU-only torch wheels do not bring it)")

from nemopose import geometry, mesh
from nemopose.solve import solver as pose, score, score_triton
from nemopose.render import raster as render  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
assert DEVICE.type == "cuda" or score_triton.interpreted(), "conftest.py sets TRITON_INTERPRET=1 without CUDA"

H, W = 20, 36
EMPTY = torch.iinfo(torch.int64).max


@pytest.fixture(autouse=True)
def _triton_must_not_fall_back(request):
    """Every test here means to test the Triton kernels. The scorer checks them against
    PyTorch on first use and quietly solves with PyTorch when they fail or disagree, which
    would turn a kernel comparison into PyTorch against PyTorch. So any warning from the
    scorer fails the test, except where the fall-back is the subject (marker triton_fallback)."""
    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("nemopose.solve.score")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if warnings and request.node.get_closest_marker("triton_fallback") is None:
        pytest.fail("the scorer fell back from Triton during a Triton test: " + " | ".join(warnings))


def small_problem(n_vertices=200, channels=16, n_images=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    verts, faces = mesh.cuboid_mesh((-0.18, 0.18), (-0.44, 0.43), (-0.17, 0.12), n_vertices)
    verts = torch.as_tensor(verts, dtype=torch.float32)
    feats = torch.nn.functional.normalize(torch.randn(verts.shape[0], channels, generator=g), dim=1)
    maps = torch.nn.functional.normalize(torch.randn(n_images, channels, H, W, generator=g), dim=1)
    clutter = torch.nn.functional.normalize(torch.randn(channels, generator=g), dim=0)
    return verts, faces, feats, maps, clutter


def kernel_mesh(scorer):
    return score_triton.KernelMesh.build(scorer.faces, scorer.face_orientation)


def random_poses(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    az = torch.rand(n, generator=g) * 2 * np.pi
    el = torch.rand(n, generator=g) * 0.8 - 0.2
    th = (torch.rand(n, generator=g) - 0.5) * 0.6
    dist = 3.5 + 1.5 * torch.rand(n, generator=g)
    return geometry.camera_center(az, el, dist).to(DEVICE), th.to(DEVICE)


@pytest.mark.parametrize("cull", [None, False])
def test_zbuffer_matches_the_pytorch_rasteriser(cull):
    verts, faces, feats, _, _ = small_problem()
    scorer = score.PoseScorer(verts, faces, feats, (H, W), cull_backfaces=cull, backend="torch", device=DEVICE)
    centers, thetas = random_poses(8)
    shift = (torch.randn(8, 2, generator=torch.Generator().manual_seed(2)) * 3).to(DEVICE)
    planes = scorer.screen(centers, thetas, shift, planar=True)
    keys = score_triton.nearest_face_keys(planes, kernel_mesh(scorer), H, W).cpu()
    cov = render.rasterize_covered(planes, scorer.faces, (H, W), cull_backfaces=scorer.face_orientation, planar=True)
    expected = torch.full((8 * H * W,), -1, dtype=torch.long)
    expected[(cov.batch * H * W + cov.pixel).cpu()] = cov.face.cpu()
    got = keys.reshape(-1)
    got = torch.where(got == EMPTY, -1, got & 0xFFFFFFFF)
    assert int((expected >= 0).sum()) > 500          # the object covers pixels in every pose
    assert torch.equal(got, expected)
    # the key's high half is the float32 depth of the nearest face there
    depth = (keys.reshape(-1)[expected >= 0] >> 32).to(torch.int32).view(torch.float32)
    assert torch.allclose(depth, cov.depth.detach().cpu(), rtol=1e-5)


def test_zbuffer_of_the_real_car_cuboid_at_paper_size():
    verts, faces = mesh.cuboid_mesh((-0.184, 0.184), (-0.441, 0.434), (-0.168, 0.120), 1024)
    feats = torch.nn.functional.normalize(torch.randn(verts.shape[0], 4), dim=1)
    scorer = score.PoseScorer(verts, faces, feats, (32, 84), backend="torch", device=DEVICE)
    centers, thetas = random_poses(2, seed=5)
    planes = scorer.screen(centers, thetas, planar=True)
    keys = score_triton.nearest_face_keys(planes, kernel_mesh(scorer), 32, 84).cpu()
    cov = render.rasterize_covered(planes, scorer.faces, (32, 84), cull_backfaces=scorer.face_orientation, planar=True)
    expected = torch.full((2 * 32 * 84,), -1, dtype=torch.long)
    expected[(cov.batch * 32 * 84 + cov.pixel).cpu()] = cov.face.cpu()
    got = keys.reshape(-1)
    assert torch.equal(torch.where(got == EMPTY, -1, got & 0xFFFFFFFF), expected)


@pytest.mark.parametrize("use_clutter", [True, False])
def test_loss_and_gradient_match_pytorch(use_clutter):
    verts, faces, feats, maps, clutter = small_problem()
    results = {}
    for backend in ("torch", "triton"):
        scorer = score.PoseScorer(verts, faces, feats, (H, W), backend=backend, device=DEVICE)
        images = scorer.prepare(maps, clutter if use_clutter else None)
        centers, thetas = random_poses(6)
        c, t = centers.requires_grad_(True), thetas.requires_grad_(True)
        shift = torch.tensor([[0.0, 0.0], [1.5, -2.0]] * 3, device=DEVICE, requires_grad=True)
        loss = scorer.losses(images, c, t, torch.tensor([0, 1, 2, 0, 1, 2], device=DEVICE), shift)
        loss.sum().backward()
        # after the calls: a scorer that fell back would compare PyTorch with PyTorch
        assert scorer.backend == backend
        results[backend] = (loss.detach(), c.grad, t.grad, shift.grad)
    ref, got = results["torch"], results["triton"]
    assert torch.allclose(got[0], ref[0], atol=1e-6)
    assert ((ref[0] - 1).abs() > 1e-5).all()           # covered pixels count (1 = an empty render)
    for g_ref, g_got in zip(ref[1:], got[1:]):
        assert g_ref.abs().max() > 1e-3
        assert torch.allclose(g_got, g_ref, atol=1e-5 * float(g_ref.abs().max()), rtol=1e-4)


def test_no_gradient_pass_gives_the_same_loss():
    verts, faces, feats, maps, clutter = small_problem()
    scorer = score.PoseScorer(verts, faces, feats, (H, W), backend="triton", device=DEVICE)
    images = scorer.prepare(maps, clutter)
    centers, thetas = random_poses(3)
    with torch.no_grad():
        plain = scorer.losses(images, centers, thetas, torch.arange(3, device=DEVICE))
    graded = scorer.losses(images, centers.requires_grad_(True), thetas, torch.arange(3, device=DEVICE))
    assert scorer.backend == "triton"
    assert torch.equal(plain, graded.detach())
    assert ((plain - 1).abs() > 1e-5).all()            # the poses cover pixels (an empty render scores 1)


def test_solver_with_triton_matches_pytorch():
    verts, faces, feats, maps, clutter = small_problem(n_images=2)
    out = {}
    for backend in ("torch", "triton"):
        solver = pose.MeshPoseSolver(verts, faces, feats, (H, W), 4.0,
                                     pose.SolverConfig(steps=8, backend=backend), device=DEVICE)
        out[backend] = solver.solve(maps, clutter)
        assert solver.scorer.backend == backend
    assert torch.equal(out["torch"]["init_index"], out["triton"]["init_index"])
    diff = geometry.pose_error({k: out["torch"][k].double().numpy() for k in ("azimuth", "elevation", "theta")},
                               {k: out["triton"][k].double().numpy() for k in ("azimuth", "elevation", "theta")})
    assert np.degrees(diff.max()) < 0.01
    assert torch.allclose(out["torch"]["loss"], out["triton"]["loss"], atol=1e-5)


@pytest.mark.triton_fallback
@pytest.mark.parametrize("fault", ["wrong", "raises", "raises without gradient"])
def test_solver_falls_back_to_pytorch(monkeypatch, caplog, fault):
    """A kernel that disagrees with PyTorch, or fails (e.g. no compiler for this GPU), in
    either variant (with or without the gradient): the solver warns and solves with PyTorch,
    with PyTorch's results."""
    verts, faces, feats, maps, clutter = small_problem(n_images=1)
    reference = pose.MeshPoseSolver(verts, faces, feats, (H, W), 4.0,
                                    pose.SolverConfig(steps=4, backend="torch"), device=DEVICE).solve(maps, clutter)
    real = score_triton.covered_totals

    def faulty(*args, **kwargs):
        if fault == "raises" or (fault == "raises without gradient" and not torch.is_grad_enabled()):
            raise RuntimeError("PTX assembly failed\ndetails")
        return real(*args, **kwargs) * 1.5

    monkeypatch.setattr(score_triton, "covered_totals", faulty)
    solver = pose.MeshPoseSolver(verts, faces, feats, (H, W), 4.0, pose.SolverConfig(steps=4, backend="triton"),
                                 device=DEVICE)
    with caplog.at_level(logging.WARNING, logger="nemopose.solve.score"):
        res = solver.solve(maps, clutter)
    assert solver.scorer.backend == "torch"
    expected = "disagrees with PyTorch" if fault == "wrong" else "failed on this device (PTX assembly failed)"
    assert expected in caplog.text
    for key in ("azimuth", "elevation", "theta", "distance", "loss"):
        if DEVICE.type == "cuda":      # PyTorch's CUDA scatter-adds are not bitwise repeatable
            torch.testing.assert_close(res[key], reference[key], rtol=0, atol=1e-5)
        else:
            assert torch.equal(res[key], reference[key])


@pytest.mark.skipif(DEVICE.type == "cuda", reason="the CPU-only refusal needs a machine without CUDA")
def test_backend_choice():
    verts, faces, feats, _, _ = small_problem()
    # "auto" never picks Triton on the CPU (there: Numba where installed, test_score_backends.py)
    assert score.resolve_backend("auto", torch.device("cpu")) in ("torch", "numba")
    with pytest.raises(ValueError, match="screen-space"):
        score.PoseScorer(verts, faces, feats, (H, W), backend="triton", perspective_correct=True)
    with pytest.raises(ValueError, match="backend must be one of"):
        score.resolve_backend("cuda", torch.device("cpu"))
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        with pytest.raises(ValueError, match="need a CUDA device"):
            score.PoseScorer(verts, faces, feats, (H, W), backend="triton")
    finally:
        os.environ["TRITON_INTERPRET"] = "1"


def test_kernels_compile_for_an_h200_without_a_gpu(tmp_path):
    """Every kernel variant builds to a cubin for compute capability 9.0 (H100/H200) with
    Triton's own ptxas: the compiled (not interpreted) kernels are valid Triton. In a fresh
    process without TRITON_INTERPRET and with an empty Triton cache."""
    import subprocess
    import sys

    code = ("import re\n"
            "from nemopose.solve import score_triton\n"
            "asm = score_triton.compile_ahead(90)\n"
            "fma = re.compile(r'(mad|fma)\\.r[nzmp]\\.(ftz\\.)?f32')\n"
            "for label, kinds in asm.items(): print(label, len(fma.findall(kinds['ptx'])), len(kinds['cubin']))\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    code_dir = str(Path(score_triton.__file__).resolve().parents[2])     # code/ (nemopose/solve/..)
    env["PYTHONPATH"] = code_dir + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 6, proc.stdout
    assert all(int(line.split()[-1]) > 1000 for line in lines), proc.stdout
    # compiled without multiply-add fusion, as launched: products and sums round as on the CPU
    assert all(int(line.split()[-2]) == 0 for line in lines), proc.stdout


def test_zbuffer_launch_split_past_the_lane_limit(monkeypatch):
    """A z-buffer whose lanes (pose x face) would pass int32 is computed in several launches
    (split by poses), with the same keys as one launch."""
    verts, faces, feats, _, _ = small_problem()
    scorer = score.PoseScorer(verts, faces, feats, (H, W), backend="torch", device=DEVICE)
    centers, thetas = random_poses(5)
    planes = scorer.screen(centers, thetas, planar=True)
    whole = score_triton.nearest_face_keys(planes, kernel_mesh(scorer), H, W)
    launches = []
    real = score_triton._zbuffer_kernel

    class Counting:
        def __getitem__(self, grid):
            launches.append(grid)
            return real[grid]

    monkeypatch.setattr(score_triton, "MAX_LANES", 2 * scorer.faces.shape[0])     # 2 poses per launch
    monkeypatch.setattr(score_triton, "_zbuffer_kernel", Counting())
    split = score_triton.nearest_face_keys(planes, kernel_mesh(scorer), H, W)
    assert len(launches) == 3
    assert torch.equal(split, whole)


def test_step_makes_no_tensor_from_host_data(monkeypatch):
    """The solver's step on the Triton path makes no tensor from host data (on a GPU each
    is a blocking copy, and no CUDA graph could hold the step): a 12-step solve makes as
    many as a 4-step solve."""
    verts, faces, feats, maps, clutter = small_problem(n_images=2)
    count = {"n": 0, "on": False}
    for name in ("tensor", "as_tensor", "from_numpy"):
        def wrapped(data, *a, __orig=getattr(torch, name), **k):
            if count["on"] and isinstance(data, (int, float, bool, list, tuple, np.ndarray, np.generic)):
                count["n"] += 1
            return __orig(data, *a, **k)
        monkeypatch.setattr(torch, name, wrapped)

    def made(steps):
        cfg = pose.SolverConfig(steps=steps, backend="triton", azimuth_samples=4, elevation_samples=2, theta_samples=1)
        solver = pose.MeshPoseSolver(verts, faces, feats, (H, W), 4.0, cfg, device=DEVICE)
        count["n"], count["on"] = 0, True
        solver.solve(maps, clutter)
        count["on"] = False
        assert solver.scorer.backend == "triton"
        return count["n"]

    assert made(12) == made(4)
