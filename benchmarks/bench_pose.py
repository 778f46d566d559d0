"""Pose-solver benchmark at the paper settings.

Car-sized 32 x 84 feature maps, the car cuboid (1024 vertices), 128-d features, 144 initial
poses, 300 Adam steps. The maps are the cuboid's smooth random features rendered at random
poses over a clutter background with noise (so the solves are real solves, and the median
error is printed as a check). Prints seconds per image for batches of 1, 8, 32 and 64
images against a one-image-at-a-time loop measured in the same run (same solver object,
so the 144 initial poses are pre-rendered once in both cases), and the batch of 32 again
with back-face culling turned off (same problems; the largest pose difference between the
two is printed), a batch with the plain-PyTorch step (``backend="torch"``, when the default
backend is a compiled one; pose differences and initial poses compared), and a few images
with the explicit feature renderer (``method="render"``: dense rendered feature maps
compared with the image's, as the original does).

Reference, not measured here: the original implementation needs 90 to 160 s per image on 2
CPU threads (METHOD.md §17).

Run: bash benchmarks/run.sh bench_pose.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


from common import car_cuboid, environment_line, print_table
from nemopose import geometry
from nemopose.solve import solver as pose
from nemopose.render import raster as render


def make_problem(n_images: int, channels: int, seed: int = 0):
    verts, faces = car_cuboid()
    g = torch.Generator().manual_seed(seed)
    v = torch.as_tensor(verts)
    phases = v @ (torch.randn(3, 32, generator=g) * 6.0)
    basis = torch.cat([torch.sin(phases), torch.cos(phases)], 1)
    feats = torch.nn.functional.normalize(basis @ torch.randn(64, channels, generator=g), dim=1)
    clutter = torch.nn.functional.normalize(torch.randn(channels, generator=g), dim=0)
    poses = torch.stack([torch.rand(n_images, generator=g) * 2 * np.pi,
                         torch.rand(n_images, generator=g) * 0.6 - 0.1,
                         (torch.rand(n_images, generator=g) - 0.5) * 0.6,
                         4.5 + torch.rand(n_images, generator=g)], 1)
    C = geometry.camera_center(poses[:, 0], poses[:, 1], poses[:, 3])
    obj = render.render_features(v, torch.as_tensor(faces), feats, C, poses[:, 2], render.RenderCamera((32, 84)))
    mask = obj.abs().sum(1, keepdim=True) > 0
    back = clutter.reshape(1, -1, 1, 1) + 0.3 * torch.randn(obj.shape, generator=g)
    maps = torch.where(mask, obj, back) + 0.05 * torch.randn(obj.shape, generator=g)
    return verts, faces, feats, clutter, torch.nn.functional.normalize(maps, dim=1).contiguous(), poses


def median_error_deg(res, poses) -> float:
    pred = {k: res[k].double().numpy() for k in ("azimuth", "elevation", "theta")}
    gt = {"azimuth": poses[:, 0].double().numpy(), "elevation": poses[:, 1].double().numpy(),
          "theta": poses[:, 2].double().numpy()}
    return float(np.degrees(np.median(geometry.pose_error(pred, gt))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,8,32,64", help="batch sizes (default 1,8,32,64)")
    parser.add_argument("--loop-images", type=int, default=4,
                        help="images solved one at a time for the baseline (default 4)")
    parser.add_argument("--steps", type=int, default=300, help="Adam steps (default 300)")
    parser.add_argument("--channels", type=int, default=128, help="feature dimension (default 128)")
    parser.add_argument("--reference-images", type=int, default=2,
                        help="images solved with the explicit feature renderer (method=render, the "
                             "original's way: dense rendered maps), one batch (default 2; 0: skip)")
    parser.add_argument("--torch-batch", type=int, default=8,
                        help="also solve this batch with the plain-PyTorch step (backend='torch', the "
                             "reference; the default backend is the compiled one where it can run) "
                             "(default 8; 0: skip)")
    parser.add_argument("--no-culling-batch", type=int, default=32,
                        help="also solve this batch with back-face culling off (default 32; 0: skip)")
    args = parser.parse_args()

    batches = [int(b) for b in args.batches.split(",")]
    verts, faces, feats, clutter, maps, poses = make_problem(max(batches + [args.loop_images]), args.channels)
    solver = pose.MeshPoseSolver(verts, faces, feats, (32, 84), 5.0, pose.SolverConfig(steps=args.steps))
    start = time.perf_counter()
    solver.solve(maps[:1], clutter)  # warm-up: one image, then two (a compiled backend compiles or loads
    solver.solve(maps[:2], clutter)  # its kernels here: one pose per call, several poses per call)
    print(f"first calls (1 image, then 2; {solver.scorer.backend} backend, kernels compiled or loaded from "
          f"the cache): {time.perf_counter() - start:.1f} s")

    start = time.perf_counter()
    loop_res = [solver.solve(maps[i:i + 1], clutter) for i in range(args.loop_images)]
    loop_s = (time.perf_counter() - start) / args.loop_images
    loop_res = {k: torch.cat([r[k] for r in loop_res]) for k in loop_res[0]}
    rows = [["loop of 1", args.loop_images, f"{loop_s:.3f}", "1.0x",
             f"{median_error_deg(loop_res, poses[:args.loop_images]):.2f}"]]
    results = {}
    for b in batches:
        start = time.perf_counter()
        results[b] = res = solver.solve(maps[:b], clutter)
        per_image = (time.perf_counter() - start) / b
        rows.append([f"batch {b}", b, f"{per_image:.3f}", f"{loop_s / per_image:.1f}x",
                     f"{median_error_deg(res, poses[:b]):.2f}"])
    b = args.no_culling_batch
    if b:
        plain = pose.MeshPoseSolver(verts, faces, feats, (32, 84), 5.0,
                                    pose.SolverConfig(steps=args.steps, cull_backfaces=False))
        plain.solve(maps[:1], clutter)  # warm-up
        start = time.perf_counter()
        res = plain.solve(maps[:b], clutter)
        per_image = (time.perf_counter() - start) / b
        rows.append([f"batch {b}, no culling", b, f"{per_image:.3f}", f"{loop_s / per_image:.1f}x",
                     f"{median_error_deg(res, poses[:b]):.2f}"])
        if b in results:
            diff = geometry.pose_error({k: results[b][k].double().numpy() for k in ("azimuth", "elevation", "theta")},
                                       {k: res[k].double().numpy() for k in ("azimuth", "elevation", "theta")})
            print(f"batch {b}, culling on vs off: largest pose difference {np.degrees(diff.max()):.3f} deg "
                  f"(solver: {'culls' if solver.scorer.cull_backfaces else 'does not cull'} by default)")
    b = args.torch_batch
    if b and solver.scorer.backend != "torch":
        plain = pose.MeshPoseSolver(verts, faces, feats, (32, 84), 5.0,
                                    pose.SolverConfig(steps=args.steps, backend="torch"))
        plain.solve(maps[:1], clutter)  # warm-up
        start = time.perf_counter()
        res = plain.solve(maps[:b], clutter)
        per_image = (time.perf_counter() - start) / b
        rows.append([f"batch {b}, torch backend", b, f"{per_image:.3f}", f"{loop_s / per_image:.1f}x",
                     f"{median_error_deg(res, poses[:b]):.2f}"])
        if b in results:
            diff = geometry.pose_error({k: results[b][k].double().numpy() for k in ("azimuth", "elevation", "theta")},
                                       {k: res[k].double().numpy() for k in ("azimuth", "elevation", "theta")})
            same = int((results[b]["init_index"] == res["init_index"]).sum())
            print(f"batch {b}, {solver.scorer.backend} vs torch backend: largest pose difference "
                  f"{np.degrees(diff.max()):.3f} deg, same initial pose for {same}/{b}")
    n = args.reference_images
    if n:
        ref = pose.MeshPoseSolver(verts, faces, feats, (32, 84), 5.0,
                                  pose.SolverConfig(steps=args.steps, method="render"))
        start = time.perf_counter()
        res = ref.solve(maps[:n], clutter)
        per_image = (time.perf_counter() - start) / n
        rows.append([f"explicit render, batch {n}", n, f"{per_image:.3f}", f"{loop_s / per_image:.1f}x",
                     f"{median_error_deg(res, poses[:n]):.2f}"])
        fast = results.get(max(batches))
        if fast is not None and max(batches) >= n:
            diff = geometry.pose_error({k: fast[k][:n].double().numpy() for k in ("azimuth", "elevation", "theta")},
                                       {k: res[k].double().numpy() for k in ("azimuth", "elevation", "theta")})
            print(f"explicit render vs batch {max(batches)}: largest pose difference {np.degrees(diff.max()):.3f} deg "
                  f"on {n} images")
    print_table(f"Pose solver ({solver.scorer.backend} backend), car 32x84, {len(verts)}-vertex cuboid, "
                f"{args.channels}-d, 144 inits, {args.steps} steps ({environment_line()})",
                ["mode", "images", "s/image", "speed-up vs loop", "median err (deg)"], rows)


if __name__ == "__main__":
    main()
