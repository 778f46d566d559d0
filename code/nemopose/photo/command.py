"""``python -m nemopose.predict``: the photo predictor from the shell (METHOD.md §16.4).

Reads the images (and a ``--boxes`` CSV), runs :class:`nemopose.predict.PosePredictor`, and
writes ``<out>/predictions.csv`` (one row per image and box) and ``<out>/<image>_pose.png``
(the photo at its resolution with the meshes drawn), printing one line per object.
``--print-example`` writes a boxes file and prints a command and a Python snippet that run
on a prepared synthetic dataset (what the demo prints at its end).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
from pathlib import Path

from PIL import Image

from .. import constants
from ..data import layout
from ..data.mat_record import load_record
from ..data.pascal3d import Pascal3DRelease
from ..errors import UsageError
from ..experiment import Experiment
from ..predict import PosePredictor, as_rgb_array
from ..solve.solver import SolverConfig
from ..utils import atomic_path, setup_logging
from .boxes import boxes_for_images, read_boxes_csv
from .calibration import PhotoCalibration

log = logging.getLogger("nemopose.predict")


def example_commands(exproot: str | os.PathLike, dataroot: str | os.PathLike, category: str = "car",
                     mesh_d: str = "single", python: str = ".venv/bin/python") -> tuple[str, str]:
    """A shell line and a Python snippet that run the predictor on the first synthetic
    validation photo of ``dataroot`` with its annotated box (the demo prints them at its
    end); writes the boxes file the shell line reads, ``<exproot>/example_boxes.csv``.

    Returns:
        (shell line, Python snippet).
    """
    lay = layout.split_layout(dataroot, "val", category)
    names = layout.read_list(lay.mesh_list_path(mesh_d, 1)) if lay.mesh_list_path(mesh_d, 1).is_file() else []
    if not names:
        raise UsageError(f"no prepared val images of {category} in {dataroot} (run PrepareData.sh)")
    release = Pascal3DRelease(layout.release_root(dataroot))
    image = release.image_path(category, names[0])
    box = tuple(round(float(v)) for v in load_record(release.annotation_path(category, names[0]), category).bbox)
    boxes_csv = Path(exproot) / "example_boxes.csv"
    with atomic_path(boxes_csv) as tmp:
        tmp.write_text("image,x0,y0,x1,y1\n" + f"{image.name},{','.join(map(str, box))}\n")
    shell = (f"{python} -m nemopose.predict --category {category} --exproot {exproot} --dataroot {dataroot} "
             f"--images {image} --boxes {boxes_csv} --out {Path(exproot) / 'photos'}")
    snippet = (f"from nemopose.predict import PosePredictor\n"
               f"predictor = PosePredictor.from_experiment(\"{exproot}\", \"{category}\", dataroot=\"{dataroot}\")\n"
               f"for p in predictor.predict([\"{image}\"], boxes=[[{box}]]):   # or detect=True, or no boxes\n"
               f"    print(p.azimuth_deg, p.elevation_deg, p.theta_deg, p.distance, p.score, p.object_found)")
    return shell, snippet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Object poses in photos with a trained NeMo: one row per (image, box) in "
                                            "<out>/predictions.csv and one picture per image.")
    p.add_argument("--category", required=True, help="object category, e.g. car")
    p.add_argument("--images", nargs="+", default=[], help="image files")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--boxes", default=None, help="CSV with the header image,x0,y0,x1,y1 (input pixels), "
                                                     "one row per object")
    where.add_argument("--detect", action="store_true", help="find the objects with a COCO detector")
    p.add_argument("--detector", default="fasterrcnn_resnet50_fpn_v2", help="torchvision detector for --detect")
    p.add_argument("--min-score", type=float, default=0.5, help="the detector's confidence threshold (default 0.5)")
    p.add_argument("--max-objects", type=int, default=20,
                   help="the most confident detections kept per image (default 20)")
    p.add_argument("--checkpoint", default="last",
                   help="checkpoint file, an epoch, last (default) or authors, in <exproot>/NeMo_<mesh-d>")
    p.add_argument("--exproot", default="exp", help="experiment folder (default exp)")
    p.add_argument("--dataroot", default="data", help="data folder holding the cuboid meshes (default data)")
    p.add_argument("--mesh-d", default="single", choices=constants.MESH_DIMENSIONS, help="default single")
    p.add_argument("--mesh", nargs="+", default=None, help="cuboid OFF file(s) instead of those under --dataroot")
    p.add_argument("--image-scale", type=float, default=None,
                   help="crop scale of the training data (default: the checkpoint's; 1 for the authors')")
    p.add_argument("--scale", type=float, default=None,
                   help="crop pixels per input pixel (default: from the box, or searched for a whole image)")
    p.add_argument("--translation", choices=("auto", "yes", "no"), default="auto",
                   help="optimise the principal point: auto (default) only for whole images")
    p.add_argument("--steps", type=int, default=300, help="Adam steps (default 300)")
    p.add_argument("--calibrate", action="store_true",
                   help="(re)calibrate the object sizes and the presence threshold on --dataroot's prepared crops, "
                        "save <checkpoint>.photo.json, and predict the --images if any")
    p.add_argument("--print-example", action="store_true",
                   help="write <exproot>/example_boxes.csv, print a command and a Python snippet that run the "
                        "predictor on --dataroot's first synthetic val photo, and exit")
    p.add_argument("--python", default=".venv/bin/python", help=argparse.SUPPRESS)   # the interpreter printed
    p.add_argument("--out", default="predictions", help="output folder (default predictions)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--download", default=os.environ.get("DOWNLOAD", "auto"), choices=("auto", "no"),
                   help="fetch the detector's weights when missing (default $DOWNLOAD or auto)")
    p.add_argument("--mirror", default=os.environ.get("DOWNLOAD_MIRROR") or None,
                   help="base URL or folder holding the weights (default $DOWNLOAD_MIRROR)")
    args = p.parse_args(argv)
    setup_logging()
    category = constants.check_category(args.category)
    if args.print_example:
        shell, snippet = example_commands(args.exproot, args.dataroot, category, args.mesh_d, args.python)
        print(f"{shell}\n\nor in Python ({args.python}):\n\n{snippet}")
        return 0
    if not args.images and not args.calibrate:
        raise UsageError("give --images (or --calibrate, or --print-example)")
    images = [as_rgb_array(path) for path in args.images]    # bad files are reported before anything loads
    boxes = boxes_for_images(read_boxes_csv(args.boxes), args.images, args.boxes) if args.boxes else None
    checkpoint = Experiment(args.exproot, args.mesh_d).resolve_checkpoint(category, args.checkpoint)
    predictor = PosePredictor.from_checkpoint(
        checkpoint, category, dataroot=args.dataroot, mesh_d=args.mesh_d, mesh_paths=args.mesh,
        image_scale=args.image_scale, device=args.device, solver=SolverConfig(steps=args.steps),
        translation={"auto": None, "yes": True, "no": False}[args.translation], detector=args.detector,
        download=args.download, mirror=args.mirror, calibrate="yes" if args.calibrate else "auto")
    if args.calibrate:
        print(f"photo calibration of {category}, stored in {PhotoCalibration.path_for(checkpoint)}:\n"
              f"{predictor.calibration.summary()}", flush=True)
        if not images:
            return 0
    predictions = predictor.predict(images, boxes, detect=args.detect, min_score=args.min_score,
                                    max_objects=args.max_objects, scale=args.scale)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [pred.csv_row(str(args.images[pred.image])) for pred in predictions]
    with atomic_path(out_dir / "predictions.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for i, (path, image) in enumerate(zip(args.images, images)):
        mine = [pred for pred in predictions if pred.image == i]
        with atomic_path(out_dir / f"{Path(path).stem}_pose.png", suffix=".png") as tmp:
            Image.fromarray(predictor.overlay(image, mine)).save(tmp)
        for pred in mine:
            found = {True: "yes", False: "no", None: "?"}[pred.object_found]
            if pred.box is None:
                print(f"{path}: no {category} found by the detector", flush=True)
                continue
            print(f"{path} box {tuple(round(v) for v in pred.box)}: azimuth {pred.azimuth_deg:.1f} elevation "
                  f"{pred.elevation_deg:.1f} theta {pred.theta_deg:.1f} deg, distance {pred.distance:.2f} "
                  f"(PASCAL3D+ units), score {pred.score:.3f}, object found: {found}", flush=True)
    log.info("wrote %s (%d rows) and %d pictures", out_dir / "predictions.csv", len(rows), len(images))
    return 0
