"""Renderer benchmark: render + back-propagate 128-d vertex features of the car cuboid.

Setting (the pose solver's): the released car cuboid (1024 vertices, 1724 faces), a map of
32 x 84 (an 84 x 84 render centre-cropped, rendered directly at 32 x 84), 128-d features,
random poses around distance 5, loss = sum(render * target), backward to the camera
centres and thetas. Prints milliseconds per pose for batches of 1, 16 and 64 and the
speed-up over batch 1 measured in the same run.

Run: bash benchmarks/run.sh bench_render.py   (sets up the environment and malloc tuning)
"""

from __future__ import annotations

import argparse

import torch


from common import car_cuboid, environment_line, print_table, time_call
from nemopose import geometry, mesh
from nemopose.render import raster as render




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mesh", default=None, help="OFF mesh (default: the car cuboid)")
    parser.add_argument("--batches", default="1,16,64", help="batch sizes (default 1,16,64)")
    parser.add_argument("--channels", type=int, default=128, help="feature dimension (default 128)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats, median reported (default 7)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    verts, faces = mesh.load_off(args.mesh) if args.mesh else car_cuboid()
    verts, faces = torch.from_numpy(verts), torch.from_numpy(faces)
    gen = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(len(verts), args.channels, generator=gen), dim=1)
    camera = render.RenderCamera(image_size=(32, 84), render_size=84)

    rows, base = [], None
    for batch in [int(b) for b in args.batches.split(",")]:
        azimuth = torch.rand(batch, generator=gen) * 6.283
        elevation = torch.rand(batch, generator=gen) * 0.8 - 0.2
        theta = ((torch.rand(batch, generator=gen) - 0.5) * 0.6).requires_grad_(True)
        center = geometry.camera_center(azimuth, elevation, torch.full((batch,), 5.0)).requires_grad_(True)
        target = torch.randn(batch, args.channels, 32, 84, generator=gen).contiguous(memory_format=torch.channels_last)

        def step() -> None:
            maps = render.render_features(verts, faces, feats, center, theta, camera)
            (maps * target).sum().backward()
            center.grad = theta.grad = None

        def forward_only() -> None:
            with torch.no_grad():
                render.render_features(verts, faces, feats, center, theta, camera)

        t_fb = time_call(step, repeats=args.repeats)
        t_f = time_call(forward_only, repeats=args.repeats)
        per_pose = 1000 * t_fb / batch
        base = base or per_pose
        rows.append([batch, f"{1000 * t_f / batch:.2f}", f"{per_pose:.2f}", f"{base / per_pose:.1f}x"])
    print_table(f"Renderer, car cuboid, 32x84 map, {args.channels}-d features ({environment_line()})",
                ["batch", "fwd ms/pose", "fwd+bwd ms/pose", "speed-up vs batch 1"], rows)


if __name__ == "__main__":
    main()
