"""CUDA checks that need no pytest (benchmarks/gpu_check.sh runs them on a GPU machine).

Each check prints PASS, FAIL (with the numbers) or SKIP; the exit status is the number of
failures. On a machine without CUDA every check is skipped (exit 0) unless ``--device cpu``
runs the CPU-possible parts (Triton in its interpreter: TRITON_INTERPRET=1).

- triton-vs-torch: the Triton loss and gradient against the PyTorch path on the device.
- zbuffer-vs-cpu: the compiled z-buffer at the paper's size equals the CPU rasteriser's
  nearest faces, bit for bit (no fma contraction: see nemopose.solve.score_triton).
- graph-vs-eager: the solver with CUDA graphs gives the eager step's poses, and says it
  replayed a graph. The gradient kernel accumulates with float atomics, whose order varies
  from run to run, so two eager solves differ too: the check prints that spread beside the
  graph-vs-eager difference and asks for the same initial pose everywhere, a median within
  0.01 degrees and a largest difference within 0.1 degrees (the CPU-vs-device tolerance).
- cpu-vs-device: 16 problems at the paper's settings solved on the CPU and on the device:
  the same initial pose for 16/16, median pose difference <= 0.1 degrees.
- other-device: the kernels launch on the tensors' device (cuda:1; needs two GPUs).

Run: PYTHONPATH=code python benchmarks/cuda_checks.py [--only NAME ...] [--images 16]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

import numpy as np
import torch

from bench_pose import make_problem
from common import car_cuboid
from nemopose import geometry
from nemopose.solve import score, score_triton, solver as pose
from nemopose.render import raster as render


def pose_diff_deg(a, b) -> np.ndarray:
    keys = ("azimuth", "elevation", "theta")
    return np.degrees(geometry.pose_error({k: a[k].double().numpy() for k in keys},
                                          {k: b[k].double().numpy() for k in keys}))


def check_triton_vs_torch(device, args):
    verts, faces, feats, clutter, maps, _ = make_problem(3, 32)
    out = {}
    g = torch.Generator().manual_seed(1)
    az, el = torch.rand(6, generator=g) * 6.28, torch.rand(6, generator=g) * 0.6
    centers = geometry.camera_center(az, el, torch.full((6,), 5.0)).to(device)
    thetas = ((torch.rand(6, generator=g) - 0.5) * 0.6).to(device)
    for backend in ("torch", "triton"):
        scorer = score.PoseScorer(verts, faces, feats, (32, 84), backend=backend, device=device)
        images = scorer.prepare(maps.to(device), clutter)
        c, t = centers.clone().requires_grad_(True), thetas.clone().requires_grad_(True)
        loss = scorer.losses(images, c, t, torch.tensor([0, 1, 2] * 2, device=device))
        loss.sum().backward()
        with torch.no_grad():
            plain = scorer.losses(images, centers, thetas, torch.tensor([0, 1, 2] * 2, device=device))
        out[backend] = (loss.detach().cpu(), plain.cpu(), c.grad.cpu(), t.grad.cpu(), scorer.backend)
    ref, got = out["torch"], out["triton"]
    if got[4] != "triton":
        return False, f"the scorer fell back to {got[4]}"
    loss_err = float((ref[0] - got[0]).abs().max())
    plain_err = float((ref[1] - got[1]).abs().max())
    grad_err = max(float((a - b).abs().max() / max(float(a.abs().max()), 1e-9)) for a, b in zip(ref[2:4], got[2:4]))
    ok = loss_err < 1e-5 and plain_err < 1e-5 and grad_err < 1e-3
    return ok, f"loss {loss_err:.2e}, no-grad loss {plain_err:.2e}, gradient {grad_err:.2e} (relative)"


def check_zbuffer_vs_cpu(device, args):
    verts, faces = car_cuboid()
    feats = torch.nn.functional.normalize(torch.randn(len(verts), 4), dim=1)
    g = torch.Generator().manual_seed(5)
    n = 64
    centers = geometry.camera_center(torch.rand(n, generator=g) * 6.28, torch.rand(n, generator=g) * 0.8 - 0.2,
                                     4.5 + torch.rand(n, generator=g))
    thetas = (torch.rand(n, generator=g) - 0.5) * 0.6
    cpu = score.PoseScorer(verts, faces, feats, (32, 84), backend="torch")
    planes = cpu.screen(centers, thetas, planar=True)
    cov = render.rasterize_covered(planes, cpu.faces, (32, 84), cull_backfaces=cpu.face_orientation, planar=True)
    expected = torch.full((n * 32 * 84,), -1, dtype=torch.long)
    expected[cov.batch * 32 * 84 + cov.pixel] = cov.face
    mesh = score_triton.KernelMesh.build(cpu.faces.to(device), None if cpu.face_orientation is None
                                         else cpu.face_orientation.to(device))
    keys = score_triton.nearest_face_keys(planes.to(device), mesh, 32, 84).cpu().reshape(-1)
    got = torch.where(keys == torch.iinfo(torch.int64).max, -1, keys & 0xFFFFFFFF)
    differ = int((got != expected).sum())
    return differ == 0, f"{differ} of {expected.numel()} pixels pick another face ({int((expected >= 0).sum())} covered)"


def _solve(device, maps, clutter, problem, **options):
    verts, faces, feats = problem
    solver = pose.MeshPoseSolver(verts, faces, feats, (32, 84), 5.0, pose.SolverConfig(**options), device=device)
    return solver, solver.solve(maps.to(device), clutter)


def check_graph_vs_eager(device, args):
    if device.type != "cuda":
        return None, "CUDA graphs need CUDA"
    verts, faces, feats, clutter, maps, _ = make_problem(args.images, 128)
    problem = (verts, faces, feats)
    eager_solver, eager = _solve(device, maps, clutter, problem, steps=args.steps, cuda_graphs="off")
    _, eager_again = _solve(device, maps, clutter, problem, steps=args.steps, cuda_graphs="off")
    graph_solver, graphed = _solve(device, maps, clutter, problem, steps=args.steps)
    diff = pose_diff_deg(eager, graphed)
    noise = pose_diff_deg(eager, eager_again)
    same_init = int((eager["init_index"] == graphed["init_index"]).sum())
    ok = (graph_solver.graph_mode == "graph" and same_init == len(diff) and float(np.median(diff)) <= 0.01
          and float(diff.max()) <= 0.1)
    return ok, (f"modes {eager_solver.graph_mode} / {graph_solver.graph_mode}, same initial pose {same_init}/{len(diff)}, "
                f"graph vs eager: median {np.median(diff):.4f}, largest {diff.max():.4f} deg; eager vs eager: "
                f"median {np.median(noise):.4f}, largest {noise.max():.4f} deg")


def check_cpu_vs_device(device, args):
    if device.type != "cuda":
        return None, "needs a device other than the CPU"
    verts, faces, feats, clutter, maps, _ = make_problem(args.images, 128)
    problem = (verts, faces, feats)
    start = time.perf_counter()
    _, on_cpu = _solve(torch.device("cpu"), maps, clutter, problem, steps=args.steps)
    cpu_s = time.perf_counter() - start
    solver, on_dev = _solve(device, maps, clutter, problem, steps=args.steps)
    diff = pose_diff_deg(on_cpu, on_dev)
    same_init = int((on_cpu["init_index"] == on_dev["init_index"]).sum())
    ok = same_init == len(diff) and float(np.median(diff)) <= 0.1
    return ok, (f"torch on CPU ({cpu_s:.0f} s) vs {solver.scorer.backend}/{solver.graph_mode} on {device}: same initial "
                f"pose {same_init}/{len(diff)}, median {np.median(diff):.4f} deg, largest {diff.max():.4f} deg")


def check_other_device(device, args):
    if device.type != "cuda" or torch.cuda.device_count() < 2:
        return None, "needs two CUDA devices"
    other = torch.device("cuda", 1)
    verts, faces, feats, clutter, maps, _ = make_problem(2, 32)
    with torch.cuda.device(0):
        _, a = _solve(other, maps, clutter, (verts, faces, feats), steps=20, backend="triton")
    _, b = _solve(torch.device("cpu"), maps, clutter, (verts, faces, feats), steps=20)
    diff = pose_diff_deg(a, b)
    return float(diff.max()) < 0.1, f"cuda:1 from current device 0: largest difference to the CPU {diff.max():.4f} deg"


CHECKS = {"triton-vs-torch": check_triton_vs_torch, "zbuffer-vs-cpu": check_zbuffer_vs_cpu,
          "graph-vs-eager": check_graph_vs_eager, "cpu-vs-device": check_cpu_vs_device,
          "other-device": check_other_device}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (the CPU-possible parts)")
    parser.add_argument("--only", nargs="*", default=None, choices=list(CHECKS), help="run only these checks")
    parser.add_argument("--images", type=int, default=16, help="problems of the pose checks (default 16)")
    parser.add_argument("--steps", type=int, default=300, help="Adam steps of the pose checks (default 300)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("cuda_checks: no CUDA device here: every check skipped")
        return 0
    failures = 0
    for name in args.only or list(CHECKS):
        start = time.perf_counter()
        try:
            ok, detail = CHECKS[name](device, args)
        except Exception as exc:              # report it and go on with the next check
            ok, detail = False, f"{type(exc).__name__}: {exc}"
            traceback.print_exc(limit=4)
        verdict = "SKIP" if ok is None else "PASS" if ok else "FAIL"
        failures += ok is False
        print(f"{verdict}  {name:16s} {time.perf_counter() - start:6.1f} s  {detail}", flush=True)
    return failures


if __name__ == "__main__":
    sys.exit(main())
