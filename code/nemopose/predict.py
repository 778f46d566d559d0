"""Pose prediction on unlabeled images (SPEC 16; the original's PredUnlabeledDataset).

The object should be roughly centred and roughly at the scale of the training crops. Each
image is fitted into the category's crop size (aspect kept, zero padding), and the solver
also optimises a 2D translation of the principal point. Prints and saves azimuth,
elevation, theta, distance and the translation (in input-image pixels), and a picture of
the mesh over each image.

    python -m nemopose.predict --category car --exproot exp --images a.jpg b.jpg
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import constants
from .checkpoint import experiment_dir, final_checkpoint, load_network
from .data.datasets import normalize_image
from .data.layout import scaled_image_size
from .inference import clutter_vector
from .mesh import load_off
from .pose import MeshPoseSolver, SolverConfig
from .utils import atomic_path, setup_logging
from .visualize import overlay_mesh

log = logging.getLogger("nemopose.predict")


def fit_image(image: Image.Image, size: tuple[int, int]) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize (aspect kept) and zero-pad an image into ``size`` (H, W), centred.

    Returns:
        (H, W, 3) uint8, the scale applied, and the (top, left) offset of the image.
    """
    h, w = size
    scale = min(h / image.height, w / image.width)
    nh, nw = max(1, round(image.height * scale)), max(1, round(image.width * scale))
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    top, left = (h - nh) // 2, (w - nw) // 2
    canvas[top:top + nh, left:left + nw] = np.asarray(image.convert("RGB").resize((nw, nh), Image.BILINEAR))
    return canvas, scale, (top, left)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Predict object poses on unlabeled images with a trained NeMo.")
    p.add_argument("--category", required=True, help="object category, e.g. car")
    p.add_argument("--images", nargs="+", required=True, help="image files")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: the last in <exproot>/NeMo_<mesh-d>)")
    p.add_argument("--exproot", default="exp", help="experiment folder (default exp)")
    p.add_argument("--mesh", default=None,
                   help="cuboid OFF file (default: <dataroot>/PASCAL3D+_release1.1/CAD_<mesh-d>/<cat>/01.off)")
    p.add_argument("--dataroot", default="data", help="data folder for the default mesh (default data)")
    p.add_argument("--mesh-d", default="single", choices=constants.MESH_DIMENSIONS, help="default single")
    p.add_argument("--image-scale", type=float, default=1.0,
                   help="crop scale the network was trained at (1 real data, 0.5 the synthetic demo; default 1)")
    p.add_argument("--no-translation", action="store_true", help="do not optimise the principal point")
    p.add_argument("--steps", type=int, default=300, help="Adam steps (default 300)")
    p.add_argument("--out", default="predictions", help="output folder (default predictions)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = p.parse_args(argv)
    setup_logging()
    cat = constants.check_category(args.category)
    ckpt = Path(args.checkpoint) if args.checkpoint else final_checkpoint(experiment_dir(args.exproot, args.mesh_d), cat)
    model, memories, _ = load_network(ckpt, device=args.device)
    mesh_path = Path(args.mesh) if args.mesh else \
        Path(args.dataroot) / "PASCAL3D+_release1.1" / f"CAD_{args.mesh_d}" / cat / "01.off"
    verts, faces = load_off(mesh_path)
    memory = memories[0]
    size = scaled_image_size(cat, args.image_scale)
    map_size = (size[0] // constants.DOWNSAMPLE_RATE, size[1] // constants.DOWNSAMPLE_RATE)
    solver = MeshPoseSolver(verts, faces, memory[:len(verts)], map_size, constants.RENDER_DISTANCE[cat],
                            SolverConfig(steps=args.steps, optimize_translation=not args.no_translation),
                            device=args.device)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in args.images:
        canvas, scale, (top, left) = fit_image(Image.open(path), size)
        image = normalize_image(torch.from_numpy(canvas).permute(2, 0, 1).float() / 255.0)
        with torch.no_grad():
            fmap = model(image[None].to(args.device)).float()
        res = solver.solve(fmap, clutter_vector(memory[len(verts):]))
        pose = {k: float(res[k][0]) for k in ("azimuth", "elevation", "theta", "distance", "loss")}
        shift = [float(res.get("shift_x", torch.zeros(1))[0]), float(res.get("shift_y", torch.zeros(1))[0])]
        shift_px = [s * constants.DOWNSAMPLE_RATE / scale for s in shift]     # input-image pixels
        row = {"image": str(path), **pose, "shift_x_px": shift_px[0], "shift_y_px": shift_px[1]}
        rows.append(row)
        Image.fromarray(overlay_mesh(canvas, verts, faces, pose,
                                     shift=(shift[0] * constants.DOWNSAMPLE_RATE,
                                            shift[1] * constants.DOWNSAMPLE_RATE))).save(
            out_dir / f"{Path(path).stem}_pose.png")
        print(f"{path}: azimuth {np.degrees(pose['azimuth']):.1f} elevation {np.degrees(pose['elevation']):.1f} "
              f"theta {np.degrees(pose['theta']):.1f} deg, distance {pose['distance']:.2f}, "
              f"translation ({shift_px[0]:.1f}, {shift_px[1]:.1f}) px, loss {pose['loss']:.4f}", flush=True)
    with atomic_path(out_dir / "predictions.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    log.info("wrote %s", out_dir / "predictions.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
