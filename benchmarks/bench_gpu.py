"""One GPU benchmark, one table: the pose solver, CPU-vs-GPU parity, training throughput.

Rows, all measured in this run with the default settings of the code being measured:

- ``solver batch B``: seconds of :meth:`nemopose.solve.solver.MeshPoseSolver.solve` over B images
  at the paper settings (car 32 x 84 maps, 1024-vertex cuboid, 128-d, 144 initial poses,
  300 Adam steps), in ms per image; the chunk size the solver picked from the free device
  memory and the peak memory are in the note. The B images are ``--distinct`` different
  problems (bench_pose.make_problem) repeated: every image is solved in full. The default
  backend on CUDA is the two Triton kernels per step (nemopose.solve.score_triton); the row
  ``torch backend`` solves ``--torch-batch`` images with the plain-PyTorch step, the
  baseline of the same run.
- ``solver batch B, graphs off``: the same with eager steps (``cuda_graphs="off"``), at
  ``--eager-batch``.
- Per solver row: the backend and graph mode the solver actually used, the host
  synchronisations per step (``torch.cuda.set_sync_debug_mode("warn")`` warnings counted in
  a ``--sync-steps`` and a 3x longer solve of 64 images, the difference over the extra
  steps; target 0) and the peak device memory.
- ``parity``: the first ``--parity`` problems solved on the CPU and on the device: how
  many chose the same initial pose, and the largest final pose difference (degrees).
- ``loader``, ``training step`` and ``training epoch`` rows: bench_train.measure at the
  real crop size (256 x 672, batch 108, ResNetExt from random initialisation) for fp32 and
  bf16; ``epoch warm`` is TrainNeMo's loop in the steady state (persistent workers).

On a machine without CUDA it says so and exits 0 (``--device cpu`` with small settings runs
the same code on the CPU, for testing the script).

Run: bash benchmarks/gpu.sh            (NEMOPOSE_PYTHON=python3 bash benchmarks/gpu.sh on a
     machine without the project's venv; no venv is created)
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import replace

import numpy as np
import torch

from bench_pose import make_problem, median_error_deg
from bench_train import measure as measure_training
from common import car_cuboid, environment_line, print_table
from nemopose import geometry
from nemopose.solve import solver as pose


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def host_syncs_per_step(make_solver, maps: torch.Tensor, clutter: torch.Tensor, steps: int) -> str:
    """Host synchronisations per solver step: the synchronising-operation warnings of
    ``torch.cuda.set_sync_debug_mode("warn")`` in a solve of ``steps`` and of ``3 * steps``
    steps (new solvers: the same captures), difference over the extra steps. A first, uncounted
    solve takes what happens once per process (the scorer's first-use check of the kernels)."""
    if maps.device.type != "cuda" or steps <= 0:
        return "-"
    make_solver(steps).solve(maps, clutter)
    counts = []
    for n in (steps, 3 * steps):
        solver = make_solver(n)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                solver.solve(maps, clutter)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(w.message).lower() for w in caught))
    return f"{(counts[1] - counts[0]) / (2 * steps):.2f}"


TARGETS_MS = {1024: 1.0, 4096: 0.3}     # the targets, ms per image at these batches


def solver_rows(device: torch.device, batches: list[int], distinct: int, steps: int, parity: int,
                torch_batch: int, eager_batch: int = 0, sync_steps: int = 10) -> list[list]:
    """The solver's ms/image at each batch size (default backend), with eager steps at
    ``eager_batch``, the plain-PyTorch backend at ``torch_batch`` (the same-run baseline),
    then the CPU-vs-device parity row. Rows: measurement, value, unit, backend, graphs,
    syncs/step, peak GiB, note."""
    verts, faces = car_cuboid()
    n_problems = max(distinct, parity, 64)
    _, _, feats, clutter, maps, poses = make_problem(n_problems, 128)
    config = pose.SolverConfig(steps=steps)
    configs = {"default": config, "graphs off": replace(config, cuda_graphs="off"),
               "torch backend": replace(config, backend="torch")}

    def make(name, n_steps=None):
        cfg = configs[name] if n_steps is None else replace(configs[name], steps=n_steps)
        return pose.MeshPoseSolver(verts, faces, feats, (32, 84), 5.0, cfg, device=device)

    maps_dev = maps.to(device)
    runs = [(b, "default") for b in batches]
    runs += [(eager_batch, "graphs off")] if eager_batch else []
    runs += [(torch_batch, "torch backend")] if torch_batch else []
    solvers, syncs = {}, {}
    for _, name in runs:
        if name not in solvers:
            solvers[name] = make(name)
            solvers[name].solve(maps_dev[:8], clutter)     # warm-up (allocator, kernels, backend check)
            syncs[name] = host_syncs_per_step(lambda n, name=name: make(name, n), maps_dev[:64], clutter, sync_steps)
    solver = solvers["default"] if "default" in solvers else make("default")
    rows = []
    for b, name in runs:
        solver = solvers[name]
        label = f"solver batch {b}" + ("" if name == "default" else f", {name}")
        tiled = maps_dev[:distinct].repeat((b + distinct - 1) // distinct, 1, 1, 1)[:b]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        chunk = min(b, solver.images_per_chunk(maps.shape[1]))
        try:
            synchronize(device)
            start = time.perf_counter()
            res = solver.solve(tiled, clutter)
            synchronize(device)
            seconds = time.perf_counter() - start
        except torch.cuda.OutOfMemoryError as exc:          # report it in the table, go on
            rows.append([label, "out of memory", "-", solver.scorer.backend, "-", syncs[name], "-",
                         f"chunk {chunk}: {str(exc).splitlines()[0][:60]}"])
            continue
        finally:
            del tiled
        truth = poses[:distinct].repeat((b + distinct - 1) // distinct, 1)[:b]
        ms = 1000 * seconds / b
        note = f"chunk {chunk}, median err {median_error_deg(res, truth):.2f} deg"
        if name == "default" and b in TARGETS_MS:
            note += f", target <= {TARGETS_MS[b]} ms: {'met' if ms <= TARGETS_MS[b] else 'NOT met'}"
        peak = f"{torch.cuda.max_memory_allocated(device) / 2 ** 30:.1f}" if device.type == "cuda" else "-"
        rows.append([label, f"{ms:.2f}", "ms/image", solver.scorer.backend, solver.graph_mode, syncs[name], peak, note])
    solver = solvers.get("default") or make("default")
    if parity:
        cpu = pose.MeshPoseSolver(verts, faces, feats, (32, 84), 5.0, config, device="cpu")
        on_cpu = cpu.solve(maps[:parity], clutter)
        on_dev = solver.solve(maps_dev[:parity], clutter)
        same_init = int((on_cpu["init_index"] == on_dev["init_index"]).sum())
        diff = geometry.pose_error({k: on_cpu[k].double().numpy() for k in ("azimuth", "elevation", "theta")},
                                   {k: on_dev[k].double().numpy() for k in ("azimuth", "elevation", "theta")})
        rows.append([f"parity CPU vs {device.type}", f"{np.degrees(diff.max()):.3f}", "deg (largest)",
                     solver.scorer.backend, solver.graph_mode, "-", "-",
                     f"{cpu.scorer.backend} on the CPU: same initial pose {same_init}/{parity}, "
                     f"median {np.degrees(np.median(diff)):.3f} deg"])
    return rows


def training_rows(device: torch.device, batch: int, size: str, iterations: int, backbone: str,
                  precisions: list[str] | None = None) -> list[list]:
    """bench_train's rows (loader, step and epoch per precision) as rows of this table."""
    extra = {"precisions": precisions} if precisions else {}
    _, _, table = measure_training(device, backbone=backbone, batch=batch, size=size, iterations=iterations,
                                   warmup=min(3, iterations), **extra)
    rows = []
    for name, _precision, images, seconds, ips, vs_fp32, vs_step in table:
        note = f"{images} images in {seconds} s"
        if vs_step != "-":
            note += f", {vs_step} of the bare step"
        elif not name.startswith("loader"):
            note += f", {vs_fp32} of fp32"
        rows.append([("" if name.startswith("loader") else "training ") + name, ips, "images/s", "-", "-", "-", "-",
                     note])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--batches", default="64,1024,4096", help="solver batch sizes (default 64,1024,4096)")
    parser.add_argument("--distinct", type=int, default=256, help="distinct solver problems (default 256)")
    parser.add_argument("--steps", type=int, default=300, help="Adam steps (default 300, the paper's)")
    parser.add_argument("--torch-batch", type=int, default=1024,
                        help="also solve this batch with the plain-PyTorch backend (default 1024; 0: skip)")
    parser.add_argument("--eager-batch", type=int, default=1024,
                        help="also solve this batch with eager steps, cuda_graphs=off (default 1024; 0: skip)")
    parser.add_argument("--sync-steps", type=int, default=10,
                        help="steps of the shorter solve that counts host syncs per step (default 10; 0: skip)")
    parser.add_argument("--parity", type=int, default=16, help="images solved on both CPU and device (default 16)")
    parser.add_argument("--train-batch", type=int, default=108, help="training batch (default 108, the paper's)")
    parser.add_argument("--size", default="256x672", help="training crop HxW (default 256x672, the real car)")
    parser.add_argument("--train-iterations", type=int, default=10, help="timed training steps / epoch batches")
    parser.add_argument("--backbone", default="auto", help="training network (default auto: resnetext on CUDA)")
    parser.add_argument("--precisions", default="", help="training precisions, e.g. bf16 (default: all)")
    parser.add_argument("--skip-training", action="store_true", help="solver rows only")
    parser.add_argument("--skip-solver", action="store_true", help="training rows only")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"benchmarks/gpu.sh: no CUDA device here (torch {torch.__version__}, "
              f"CUDA build {torch.version.cuda or 'none'}): nothing measured. "
              "CPU benchmarks: bash benchmarks/run.sh bench_pose.py | bench_train.py")
        return 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    start = time.perf_counter()
    rows = []
    if not args.skip_solver:
        rows += solver_rows(device, [int(b) for b in args.batches.split(",") if b], args.distinct, args.steps,
                            args.parity, args.torch_batch, args.eager_batch, args.sync_steps)
    if not args.skip_training:
        rows += training_rows(device, args.train_batch, args.size, args.train_iterations, args.backbone,
                              [p for p in args.precisions.split(",") if p] or None)
    print_table(f"nemopose on {name} ({environment_line()}), {time.perf_counter() - start:.0f} s in all",
                ["measurement", "value", "unit", "backend", "graphs", "syncs/step", "peak GiB", "note"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
