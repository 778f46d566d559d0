"""3D-annotation benchmark: vertex pixels, visibility and weights of the car cuboid.

Setting (METHOD.md §6.3 at the real car size): the released car cuboid (1024 vertices, 1724
faces) and the real PASCAL3D+ car of the test fixtures (500 x 334 original image, its
annotation), seen from ``--images`` viewpoints (the annotated one with the azimuth turned
in equal steps, elevation varied). Times the whole per-image step
(:func:`annotate3d.annotate_vertices`) with each z-buffer:

- ``points``: the default, the z-buffer read only at the vertex pixels, with the original's
  pixel coverage (should agree 100 % with the baseline);
- ``points/centre``: the same with the rasteriser's pixel-centre coverage;
- ``rasterize``: the whole image rasterised with ``render.rasterize`` (pixel-centre rule);
- ``reference``: the original's per-triangle Python loop (the baseline).

and reports seconds per image, the speed-up over the baseline measured in the same run,
and how often each agrees with the baseline on vertex visibility.

Run: bash benchmarks/run.sh bench_annotate3d.py   (sets up the environment and malloc tuning)
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch


from common import FIXTURES, car_cuboid, environment_line, print_table, time_call
from nemopose.data import annotate3d


def car_annotation() -> dict:
    """The real car's annotation (tests/fixtures/real/nemo_sample_car)."""
    return dict(np.load(FIXTURES / "real" / "nemo_sample_car" / "car_annotation.npz"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="viewpoints timed (default 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of the fast paths, median (default 5)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    verts, faces = car_cuboid()
    target = annotate3d.MeshForAnnotation(verts.astype(np.float64), faces,
                                          annotate3d.vertex_directions(verts, faces, "original"))
    base = car_annotation()
    annos = []
    for i in range(args.images):
        anno = dict(base)
        anno["azimuth"] = (float(base["azimuth"]) + 2 * math.pi * i / args.images) % (2 * math.pi)
        anno["elevation"] = float(base["elevation"]) + math.radians(10 * (i % 4))
        annos.append(anno)

    reference = {}
    rows, base_time = [], None
    for method in ("reference", "rasterize", "points/centre", "points"):
        zbuffer, _, coverage = method.partition("/")
        config = annotate3d.Annotate3DConfig(zbuffer=zbuffer, coverage=coverage or "original")
        results = [annotate3d.annotate_vertices(a, target, config)["visible"] for a in annos]
        repeats = 1 if method == "reference" else args.repeats
        seconds = time_call(lambda: [annotate3d.annotate_vertices(a, target, config) for a in annos],
                            repeats=repeats, warmup=0 if method == "reference" else 1) / len(annos)
        if method == "reference":
            reference = results
            base_time = seconds
        agree = np.mean([np.mean(r == ref) for r, ref in zip(results, reference)])
        same = sum(bool((r == ref).all()) for r, ref in zip(results, reference))
        rows.append([method, f"{seconds:.4f}", f"{base_time / seconds:.1f}x", f"{100 * agree:.2f}",
                     f"{same}/{len(annos)}"])
    print_table(f"3D annotation per image, car cuboid ({len(verts)} vertices, {len(faces)} faces), "
                f"500x334 original image, {args.images} viewpoints ({environment_line()})",
                ["z-buffer", "s/image", "speed-up vs loop", "% vertices as loop", "images identical"], rows)


if __name__ == "__main__":
    main()
