"""Pose prediction on unlabeled images (METHOD.md §16; the original's PredUnlabeledDataset).

The library API::

    from nemopose.predict import PosePredictor
    predictor = PosePredictor.from_checkpoint("exp/NeMo_single/saved_model_car_799.pth", "car",
                                              dataroot="data")          # cuboids of PrepareData.sh
    poses = predictor.predict(["a.jpg", pil_image, uint8_array])        # one Prediction per image
    poses[0].azimuth, poses[0].elevation, poses[0].theta                # radians

The object should be roughly at the scale of the training crops (PASCAL3D+ objects rescaled to
distance 5; ``scale`` resizes the inputs first) and roughly centred: each image is placed in
the category's crop (by default fitted into it, aspect kept, zero padding), and the solver
also optimises a 2D translation of the principal point (and starts from several shifts).
With several meshes (multi) the lowest loss wins.

CLI: ``python -m nemopose.predict --category car --images a.jpg b.jpg`` prints and saves the
poses (CSV) and a picture of the mesh over each image.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from . import constants, geometry
from .data import layout
from .data.datasets import normalize_image
from .data.pascal3d import load_image_array
from .distributed import choose_device
from .errors import UsageError
from .experiment import Experiment
from .train.model import NeMoNet
from .solve.neural_mesh import MeshSolution, NeuralMesh, load_trained, solve_over_meshes
from .solve.solver import MeshPoseSolver, SolverConfig
from .utils import atomic_path, setup_logging

log = logging.getLogger("nemopose.predict")

ImageInput = str | os.PathLike | Image.Image | np.ndarray


@dataclass(frozen=True)
class Prediction:
    """The pose of the object in one image.

    Attributes:
        azimuth, elevation, theta: radians (PASCAL3D+ convention).
        distance: PASCAL3D+ distance for a camera of focal length ``M f = 3000`` pixels on the
            input image (:func:`nemopose.geometry.pascal_distance`).
        render_distance: the solver's distance (render camera).
        shift_x, shift_y: where the object's origin projects, relative to the input image's
            centre, in input-image pixels (x right, y down).
        loss: the final render-and-compare loss; mesh: the mesh used (1-based).
    """

    azimuth: float
    elevation: float
    theta: float
    distance: float
    render_distance: float
    shift_x: float
    shift_y: float
    loss: float
    mesh: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def as_rgb_array(image: ImageInput) -> np.ndarray:
    """An input image as (H, W, 3) uint8: a file path (decoded, clear error naming it), a PIL
    image or an array (H, W, 3) / (H, W) uint8."""
    if isinstance(image, (str, os.PathLike)):
        return load_image_array(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise UsageError(f"an image array must be uint8 (H, W, 3), got {array.dtype} {array.shape}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


@dataclass(frozen=True)
class Placement:
    """An input image on the network's canvas.

    Attributes:
        canvas: (H, W, 3) uint8, H and W multiples of the stride.
        scale: canvas pixels per input pixel.
        offset: (x, y) canvas centre minus the input image's centre, in canvas pixels.
    """

    canvas: np.ndarray
    scale: float
    offset: tuple[float, float]


def place_image(image: np.ndarray, size: tuple[int, int], scale: float | None = None) -> Placement:
    """Put an image on a zero canvas for the network.

    ``scale`` None: the largest scale that fits the image into ``size`` (the category's crop,
    aspect kept), centred. A given ``scale``: the image resized by it and centred on a canvas
    of at least ``size``, grown to hold all of it (rounded up to the stride), so nothing is
    cut whatever the object's place.
    """
    h, w = size
    ih, iw = image.shape[:2]
    scale = min(h / ih, w / iw) if scale is None else float(scale)
    if not scale > 0:
        raise UsageError(f"scale must be > 0, got {scale}")
    nh, nw = max(1, round(ih * scale)), max(1, round(iw * scale))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR)) if (nh, nw) != (ih, iw) else image
    step = constants.DOWNSAMPLE_RATE
    ch, cw = max(h, -(-nh // step) * step), max(w, -(-nw // step) * step)
    canvas = np.zeros((ch, cw, 3), dtype=np.uint8)
    top, left = (ch - nh) // 2, (cw - nw) // 2
    canvas[top:top + nh, left:left + nw] = resized
    return Placement(canvas, scale, (cw / 2 - (left + nw / 2), ch / 2 - (top + nh / 2)))


def shift_grid(map_size: tuple[int, int], fraction: float = 0.08, steps: int = 1) -> list[tuple[float, float]]:
    """Initial principal-point shifts (x, y) in map pixels: a (2 steps + 1)^2 grid spanning
    +-``fraction`` of the map size, so an off-centre object starts near its place."""
    h, w = map_size
    ticks = [k / steps for k in range(-steps, steps + 1)]
    return [(dx * fraction * w, dy * fraction * h) for dy in ticks for dx in ticks]


class PosePredictor:
    """Estimates object poses in arbitrary images with a trained NeMo.

    Args:
        model: the network (test-time forward).
        meshes: its neural meshes (one for single, one per CAD model for multi).
        category: the object category.
        image_scale: the scale of the crops the network was trained on (1 = PASCAL3D+; the
            synthetic demo uses 0.5).
        device: where to run.
        translation: optimise the principal point, from a grid of initial shifts
            (:func:`shift_grid`); off: the object must be centred.
        solver: :class:`SolverConfig` (default: the paper's settings); its translation
            settings are set from ``translation``. (More starts, ``num_starts=3``, made the
            off-centre release images of the tests worse, not better: the lowest final loss
            there is not always the right pose.)
        batch_size: images through the network and the solver together.
    """

    def __init__(self, model: NeMoNet, meshes: Sequence[NeuralMesh], category: str, image_scale: float = 1.0,
                 device: torch.device | str = "cpu", *, translation: bool = True, solver: SolverConfig | None = None,
                 batch_size: int = 16):
        self.category = constants.check_category(category)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.meshes = list(meshes)
        self.image_scale = float(image_scale)
        self.crop_size = constants.image_size(category, self.image_scale)
        self.map_size = constants.feature_map_size(category, self.image_scale)
        self.solver_config = replace(solver or SolverConfig(), optimize_translation=translation,
                                     init_shifts=((0.0, 0.0),))   # the shift grid follows each map size
        self.batch_size = batch_size
        self._solver_cache: dict[tuple[int, int], list[MeshPoseSolver]] = {}

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike, category: str, *, dataroot: str | os.PathLike = "data",
                        mesh_d: str = "single", mesh_paths: Sequence[str | os.PathLike] | None = None,
                        image_scale: float | None = None, device: str = "cpu", **kwargs: Any) -> "PosePredictor":
        """Load a checkpoint (ours or the authors') and its cuboid meshes (``mesh_paths``, or
        those of PrepareData.sh under ``dataroot``). ``image_scale`` defaults to the one the
        checkpoint was trained at (1 for the authors')."""
        category = constants.check_category(category)
        paths = list(mesh_paths) if mesh_paths else layout.cuboid_paths(dataroot, mesh_d, category)
        model, meshes, info = load_trained(checkpoint, paths, choose_device(device))
        scale = image_scale if image_scale is not None else float(info.get("image_scale") or 1.0)
        return cls(model, meshes, category, scale, choose_device(device), **kwargs)

    def _solvers(self, map_size: tuple[int, int]) -> list[MeshPoseSolver]:
        """One solver per mesh for maps of ``map_size`` (the render camera keeps the training
        crops' focal length, so a larger canvas only widens the field of view)."""
        if map_size not in self._solver_cache:
            config = replace(self.solver_config, init_shifts=shift_grid(map_size)) \
                if self.solver_config.optimize_translation else self.solver_config
            self._solver_cache[map_size] = [
                MeshPoseSolver(m.verts, m.faces, m.vertex_features, map_size, constants.RENDER_DISTANCE[self.category],
                               config, self.device, render_size=max(self.map_size)) for m in self.meshes]
        return self._solver_cache[map_size]

    def predict(self, images: Sequence[ImageInput] | ImageInput, scale: float | None = None) -> list[Prediction]:
        """One :class:`Prediction` per image (a single image is accepted too).

        Args:
            images: file paths, PIL images or uint8 arrays.
            scale: resize factor from input pixels to training-crop pixels (None: fit the
                whole image into the crop; given: the whole image at that scale, on a canvas
                as large as needed).
        """
        if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
            images = [images]
        placed = [place_image(as_rgb_array(image), self.crop_size, scale) for image in images]
        out: list[Prediction | None] = [None] * len(placed)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(placed):
            groups.setdefault(p.canvas.shape[:2], []).append(i)
        for shape, members in groups.items():
            map_size = (shape[0] // constants.DOWNSAMPLE_RATE, shape[1] // constants.DOWNSAMPLE_RATE)
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                batch = torch.stack([normalize_image(torch.from_numpy(placed[i].canvas).permute(2, 0, 1))
                                     for i in chunk])
                with torch.no_grad():
                    maps = self.model(batch.to(self.device)).float()
                for i, sol in zip(chunk, solve_over_meshes(self._solvers(map_size), self.meshes, maps)):
                    out[i] = self._prediction(sol, placed[i])
        return out  # type: ignore[return-value]

    def _prediction(self, sol: MeshSolution, placed: Placement) -> Prediction:
        """Solver output (map pixels, render distance) -> input-image pixels, PASCAL3D+ distance."""
        stride = constants.DOWNSAMPLE_RATE
        return Prediction(
            azimuth=sol.azimuth, elevation=sol.elevation, theta=sol.theta,
            distance=float(geometry.pascal_distance(sol.distance, placed.scale, self.map_size)),
            render_distance=sol.distance,
            shift_x=(sol.shift_x * stride + placed.offset[0]) / placed.scale,
            shift_y=(sol.shift_y * stride + placed.offset[1]) / placed.scale,
            loss=sol.loss, mesh=sol.mesh)

    def overlay(self, image: ImageInput, prediction: Prediction, scale: float | None = None) -> np.ndarray:
        """The image on the network's canvas with the predicted mesh drawn over it, (H, W, 3) uint8."""
        from .tools.visualize import overlay_mesh

        placed = place_image(as_rgb_array(image), self.crop_size, scale)
        mesh = self.meshes[prediction.mesh - 1]
        pose = (prediction.azimuth, prediction.elevation, prediction.theta, prediction.render_distance)
        shift = (prediction.shift_x * placed.scale - placed.offset[0], prediction.shift_y * placed.scale - placed.offset[1])
        return overlay_mesh(placed.canvas, mesh.verts, mesh.faces, pose, shift=shift,
                            render_size=max(self.crop_size))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Predict object poses on unlabeled images with a trained NeMo.")
    p.add_argument("--category", required=True, help="object category, e.g. car")
    p.add_argument("--images", nargs="+", required=True, help="image files")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file (default: the last one in <exproot>/NeMo_<mesh-d>)")
    p.add_argument("--exproot", default="exp", help="experiment folder (default exp)")
    p.add_argument("--dataroot", default="data", help="data folder holding the cuboid meshes (default data)")
    p.add_argument("--mesh-d", default="single", choices=constants.MESH_DIMENSIONS, help="default single")
    p.add_argument("--mesh", nargs="+", default=None, help="cuboid OFF file(s) instead of those under --dataroot")
    p.add_argument("--image-scale", type=float, default=None,
                   help="crop scale of the training data (default: the checkpoint's; 1 for the authors')")
    p.add_argument("--scale", type=float, default=None,
                   help="resize the inputs by this factor (default: fit each image into the crop)")
    p.add_argument("--no-translation", action="store_true", help="do not optimise the principal point")
    p.add_argument("--steps", type=int, default=300, help="Adam steps (default 300)")
    p.add_argument("--out", default="predictions", help="output folder (default predictions)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = p.parse_args(argv)
    setup_logging()
    category = constants.check_category(args.category)
    images = [as_rgb_array(path) for path in args.images]    # bad files are reported before anything loads
    checkpoint = args.checkpoint or Experiment(args.exproot, args.mesh_d).final_checkpoint(category)
    predictor = PosePredictor.from_checkpoint(checkpoint, category, dataroot=args.dataroot, mesh_d=args.mesh_d,
                                              mesh_paths=args.mesh, image_scale=args.image_scale, device=args.device,
                                              translation=not args.no_translation, solver=SolverConfig(steps=args.steps))
    predictions = predictor.predict(images, scale=args.scale)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, image, pred in zip(args.images, images, predictions):
        rows.append({"image": str(path), **pred.as_dict()})
        Image.fromarray(predictor.overlay(image, pred, args.scale)).save(out_dir / f"{Path(path).stem}_pose.png")
        print(f"{path}: azimuth {np.degrees(pred.azimuth):.1f} elevation {np.degrees(pred.elevation):.1f} "
              f"theta {np.degrees(pred.theta):.1f} deg, distance {pred.distance:.2f} (PASCAL3D+ units), "
              f"object centre {pred.shift_x:+.1f} {pred.shift_y:+.1f} px from the image centre, "
              f"loss {pred.loss:.4f}", flush=True)
    with atomic_path(out_dir / "predictions.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    log.info("wrote %s and %d pictures", out_dir / "predictions.csv", len(rows))
    return 0


if __name__ == "__main__":
    from .cli import run

    raise SystemExit(run(main))
