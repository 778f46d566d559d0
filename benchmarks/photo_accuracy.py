"""Accuracy of the photo predictor on the synthetic release images (SYNTHETIC data): with
the annotated boxes, on whole images without boxes, and the no-object answer on empty
images; InferenceNeMo's pipeline on the same objects' prepared crops as the baseline.

    python benchmarks/photo_accuracy.py --dataroot data/synthetic_demo --exproot exp/synthetic_demo \\
        [--images 40] [--whole 20] [--empty 20]

Needs a trained, calibrated checkpoint (python -m nemopose.predict --calibrate ...).
Prints one table (pi/6 and pi/18 accuracy in %, median error in degrees, seconds per
image) and the share of "no" on the empty images.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from nemopose import evaluate  # noqa: E402
from nemopose.data import annotation, layout  # noqa: E402
from nemopose.data.mat_record import load_record  # noqa: E402
from nemopose.data.pascal3d import Pascal3DRelease, load_image_array  # noqa: E402
from nemopose.photo.calibration import negative_images  # noqa: E402
from nemopose.predict import PosePredictor  # noqa: E402

ANGLES = ("azimuth", "elevation", "theta")


def errors(predictions, truths) -> np.ndarray:
    return evaluate.rotation_errors_deg({k: [getattr(p, k) for p in predictions] for k in ANGLES},
                                        {k: [t[k] for t in truths] for k in ANGLES})


def row(name: str, err: np.ndarray, seconds: float) -> str:
    return (f"| {name} | {err.size} | {100 * np.mean(err < 30):.0f} | {100 * np.mean(err < 10):.0f} | "
            f"{np.median(err):.1f} | {seconds / err.size:.2f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataroot", default="data/synthetic_demo")
    p.add_argument("--exproot", default="exp/synthetic_demo")
    p.add_argument("--category", default="car")
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--whole", type=int, default=20)
    p.add_argument("--empty", type=int, default=20)
    args = p.parse_args()
    predictor = PosePredictor.from_experiment(args.exproot, args.category, dataroot=args.dataroot)
    lay = layout.split_layout(args.dataroot, "val", args.category)
    release = Pascal3DRelease(layout.release_root(args.dataroot))
    names = layout.read_list(lay.mesh_list_path("single", 1))[:args.images]
    photos = [load_image_array(release.image_path(args.category, n)) for n in names]
    boxes = [[tuple(load_record(release.annotation_path(args.category, n), args.category).bbox)] for n in names]
    truths = [annotation.pose(annotation.load(lay.annotation_path(n))) for n in names]
    crops = [load_image_array(lay.image_path(n)) for n in names]
    print("| images (SYNTHETIC) | n | pi/6 % | pi/18 % | median deg | s/img |\n| --- | --- | --- | --- | --- | --- |")
    t = time.perf_counter()
    # the prepared crop as the whole input at scale 1, principal point fixed, one solve:
    # the crop InferenceNeMo.sh solves, with its solver settings
    baseline = PosePredictor.from_experiment(args.exproot, args.category, dataroot=args.dataroot,
                                             translation=False, refine=False)
    base = baseline.predict(crops, scale=1.0)
    print(row("prepared crops as InferenceNeMo solves them (baseline)", errors(base, truths), time.perf_counter() - t))
    t = time.perf_counter()
    with_boxes = predictor.predict(photos, boxes=boxes)
    print(row("photos with their boxes", errors(with_boxes, truths), time.perf_counter() - t))
    t = time.perf_counter()
    whole = predictor.predict(photos[:args.whole])
    print(row("whole photos, no box", errors(whole, truths[:args.whole]), time.perf_counter() - t))
    found = [p.object_found for p in with_boxes]
    print(f"\nobject_found on the photos with boxes: yes {sum(f is True for f in found)} of {len(found)}; "
          f"whole photos: yes {sum(p.object_found is True for p in whole)} of {len(whole)}")
    empties = negative_images(photos, max(1, args.empty // 4), seed=12345)
    for kind, images in empties.items():
        answers = predictor.predict(images)
        print(f"empty photos, {kind}: no {sum(p.object_found is False for p in answers)} of {len(answers)} "
              f"(scores {', '.join(f'{p.score:.2f}' for p in answers)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
