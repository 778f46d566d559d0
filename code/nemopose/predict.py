"""Pose from photos: the predictor of unlabeled images (METHOD.md §16; the original's
PredUnlabeledDataset, extended).

The library API (paths as the demo, ``bash code/demo.sh``, leaves them)::

    from nemopose.predict import PosePredictor
    predictor = PosePredictor.from_experiment("exp/synthetic_demo", "car", dataroot="data/synthetic_demo")
    for p in predictor.predict(["photo.jpg"], boxes=[[(135, 91, 470, 353)]]):     # or detect=True
        print(p.box, p.azimuth_deg, p.elevation_deg, p.theta_deg, p.distance, p.score, p.object_found)

Each object is given by a box (``boxes=``, per image a list of ``(x0, y0, x1, y1)`` in its
pixels), found by a COCO detector (``detect=True``, :mod:`nemopose.photo.detect`), or, with
neither, the whole image is the box. A box is cropped as the data preparation crops a
PASCAL3D+ object, at the scale that gives it the size the category's objects have in the
training crops (:mod:`nemopose.photo.boxes`); the pose is solved with the principal point
fixed; then the photo is cropped once more exactly as the preparation would with that pose
(centred on the object's projected origin, resized so that it sits at distance 5) and
solved again. A whole image is tried at several scales, with the principal point
optimised from a grid of shifts around its centre, and the candidate whose mesh explains
its pixels best against the clutter model is kept. Every prediction has a presence score and ``object_found``
(:mod:`nemopose.photo.presence`, threshold from :mod:`nemopose.photo.calibration`).

CLI: ``python -m nemopose.predict --category car --images a.jpg b.jpg [--boxes boxes.csv |
--detect]`` writes predictions.csv (one row per image and box) and one picture per image
at its own resolution with the meshes drawn over the objects.
"""

from __future__ import annotations

import collections
import logging
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from . import constants, geometry
from .data import layout
from .data.crop import CropError, crop_geometry, render_distance_for_crop
from .data.datasets import normalize_image
from .data.pascal3d import load_image_array
from .errors import UsageError
from .distributed import choose_device
from .experiment import CheckpointNotFound, Experiment
from .photo.boxes import Box, ObjectSizes, Placement, crop_box, crop_placement, place_image
from .photo.calibration import PhotoCalibration
from .photo.presence import IMPLAUSIBLE_SCORE, is_flat, presence_scores
from .solve.neural_mesh import MeshSolution, NeuralMesh, load_trained, solve_over_meshes
from .solve.solver import MeshPoseSolver, SolverConfig
from .train.model import NeMoNet

log = logging.getLogger("nemopose.predict")

__all__ = ["PosePredictor", "Prediction", "place_image", "shift_grid", "as_rgb_array"]

ImageInput = str | os.PathLike | Image.Image | np.ndarray
BoxInput = Box | Sequence[float]
WHOLE_IMAGE_SCALES = (1.0, 1.6, 2.5, 4.0)   # whole-image size / object size tried without a box
MIN_DETECTED_SIDE = 4      # detections thinner than this (pixels) are dropped
SOLVER_CACHE_SIZE = 4       # solvers (with their rasterised initial poses) kept for recent map sizes
CSV_COLUMNS = ("image", "x0", "y0", "x1", "y1", "azimuth", "elevation", "theta", "azimuth_deg", "elevation_deg",
               "theta_deg", "distance", "score", "object_found")


@dataclass(frozen=True)
class Prediction:
    """The pose of one object in one image.

    Attributes:
        azimuth, elevation, theta: radians (PASCAL3D+ convention); NaN when no box was found.
        distance: PASCAL3D+ distance for a camera of focal length ``M f = 3000`` pixels on the
            input image (:func:`nemopose.geometry.pascal_distance`).
        render_distance: the solver's distance (render camera) on the crop.
        shift_x, shift_y: where the object's origin projects, relative to the input image's
            centre, in input-image pixels (x right, y down).
        loss: the final render-and-compare loss; mesh: the mesh used (1-based).
        image: index of the input image; box: the box used (x0, y0, x1, y1), input pixels
            (the whole image without a box; None when the detector found nothing).
        scale: crop pixels per input pixel of the final crop.
        score: the presence score (:mod:`nemopose.photo.presence`); object_found: score >=
            the calibrated threshold (None without a calibration).
        detector_score: the detector's confidence (``detect=True``), else None.
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
    image: int = 0
    box: tuple[float, float, float, float] | None = None
    scale: float = float("nan")
    score: float = float("nan")
    object_found: bool | None = None
    detector_score: float | None = None

    azimuth_deg = property(lambda self: math.degrees(self.azimuth))
    elevation_deg = property(lambda self: math.degrees(self.elevation))
    theta_deg = property(lambda self: math.degrees(self.theta))

    @classmethod
    def nothing(cls, image: int) -> "Prediction":
        """The answer for an image in which the detector found no object."""
        nan = float("nan")
        return cls(nan, nan, nan, nan, nan, nan, nan, nan, 0, image=image, object_found=False)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def csv_row(self, image_name: str) -> dict[str, Any]:
        """The row of predictions.csv (:data:`CSV_COLUMNS`, then loss, mesh, render_distance,
        shift, scale and detector score)."""
        box = self.box or (float("nan"),) * 4
        found = "" if self.object_found is None else ("yes" if self.object_found else "no")
        row = {"image": image_name, "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3],
               "azimuth": self.azimuth, "elevation": self.elevation, "theta": self.theta,
               "azimuth_deg": self.azimuth_deg, "elevation_deg": self.elevation_deg, "theta_deg": self.theta_deg,
               "distance": self.distance, "score": self.score, "object_found": found, "loss": self.loss,
               "mesh": self.mesh, "render_distance": self.render_distance, "shift_x": self.shift_x,
               "shift_y": self.shift_y, "scale": self.scale,
               "detector_score": "" if self.detector_score is None else self.detector_score}
        return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()}


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


def shift_grid(map_size: tuple[int, int], fraction: float = 0.08, steps: int = 1) -> list[tuple[float, float]]:
    """Initial principal-point shifts (x, y) in map pixels: a (2 steps + 1)^2 grid spanning
    +-``fraction`` of the map size, so an object near the centre starts near its place.

    (A grid over the whole of a large canvas, points every quarter crop, was tried for whole
    photos at the larger scales: on the synthetic release images it found wrong poses of
    lower loss, 95 / 45 % within pi/6 / pi/18 and 12 degrees median on 20 photos, against
    95 / 65 % and 6.9 degrees with this grid, at 2.5 times the time.)"""
    h, w = map_size
    ticks = [k / steps for k in range(-steps, steps + 1)]
    return [(dx * fraction * w, dy * fraction * h) for dy in ticks for dx in ticks]


@dataclass
class _Job:
    """One object to solve: which image, its box, and the placement being solved."""

    image: int
    box: Box
    placed: Placement
    detector_score: float | None = None
    result: Prediction | None = field(default=None)
    margin: float = IMPLAUSIBLE_SCORE      # the result's clutter margin (picks a whole photo's scale)


class PosePredictor:
    """Estimates object poses in photos with a trained NeMo.

    Args:
        model: the network (test-time forward).
        meshes: its neural meshes (one for single, one per CAD model for multi).
        category: the object category.
        image_scale: the scale of the crops the network was trained on (1 = PASCAL3D+; the
            synthetic demo uses 0.5).
        device: where to run.
        translation: optimise the principal point. None (default): only where the object's
            place is unknown (a whole image); True: also for boxes; False: never.
        solver: :class:`SolverConfig` (default: the paper's settings).
        batch_size: crops through the network together.
        calibration: the photo calibration (object sizes, presence threshold); None: read
            the object sizes from ``dataroot``'s prepared training set, no yes/no.
        dataroot: where the prepared data is (for the object sizes without a calibration).
        refine: re-crop every boxed object as the preparation would at its first pose and
            solve again (off: one solve per box).
        detector: the detector's name (:data:`nemopose.photo.detect.DETECTORS`) for
            ``detect=True``; download, mirror: how its weights are fetched.
    """

    def __init__(self, model: NeMoNet, meshes: Sequence[NeuralMesh], category: str, image_scale: float = 1.0,
                 device: torch.device | str = "cpu", *, translation: bool | None = None,
                 solver: SolverConfig | None = None, batch_size: int = 16, calibration: PhotoCalibration | None = None,
                 dataroot: str | os.PathLike | None = None, refine: bool = True,
                 detector: str = "fasterrcnn_resnet50_fpn_v2", download: str = "auto", mirror: str | None = None):
        self.category = constants.check_category(category)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.meshes = list(meshes)
        self.image_scale = float(image_scale)
        self.crop_size = constants.image_size(category, self.image_scale)
        self.map_size = constants.feature_map_size(category, self.image_scale)
        self.translation = translation
        self.solver_config = replace(solver or SolverConfig(), optimize_translation=False, init_shifts=((0.0, 0.0),))
        self.batch_size = batch_size
        self._sizes: ObjectSizes | None = None
        self.calibration = calibration
        self.dataroot = dataroot
        self.refine = refine
        self.detector_name, self.download, self.mirror = detector, download, mirror
        self._detector = None
        self._solver_cache: collections.OrderedDict[tuple, list[MeshPoseSolver]] = collections.OrderedDict()
        self._warned_uncalibrated = False

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike, category: str, *, dataroot: str | os.PathLike = "data",
                        mesh_d: str = "single", mesh_paths: Sequence[str | os.PathLike] | None = None,
                        image_scale: float | None = None, device: str = "cpu", calibrate: str = "auto",
                        **kwargs: Any) -> "PosePredictor":
        """Load a checkpoint (ours or the authors'), its cuboid meshes (``mesh_paths``, or
        those of PrepareData.sh under ``dataroot``) and its photo calibration
        (``<checkpoint>.photo.json``). ``image_scale`` defaults to the one the checkpoint
        was trained at (1 for the authors').

        ``calibrate``: "auto" (default): without a stored calibration, calibrate on
        ``dataroot``'s prepared crops once (about half a minute on a CPU) and store it next
        to the checkpoint; without those crops, warn and leave ``object_found`` empty.
        "yes": calibrate again. "no": only read a stored one.

        Raises:
            CheckpointNotFound when ``checkpoint`` does not exist; UsageError for a device
            that is not there; DataNotFound for missing meshes.
        """
        category = constants.check_category(category)
        if not Path(checkpoint).is_file():
            raise CheckpointNotFound(f"checkpoint {checkpoint} does not exist (PosePredictor.from_experiment picks "
                                     "the last one of an experiment folder)")
        dev = choose_device(device, fix="use device='cpu'")
        paths = list(mesh_paths) if mesh_paths else layout.cuboid_paths(dataroot, mesh_d, category)
        model, meshes, info = load_trained(checkpoint, paths, dev)
        scale = image_scale if image_scale is not None else float(info.get("image_scale") or 1.0)
        if calibrate not in ("auto", "yes", "no"):
            raise UsageError(f"calibrate must be auto, yes or no, got {calibrate!r}")
        stored = PhotoCalibration.find(checkpoint) if calibrate != "yes" else None
        predictor = cls(model, meshes, category, scale, dev, dataroot=dataroot,
                        **{"calibration": stored, **kwargs})
        if predictor.calibration is None and calibrate != "no":
            predictor.calibrate(checkpoint, required=calibrate == "yes")
        return predictor

    def calibrate(self, checkpoint: str | os.PathLike, required: bool = True) -> PhotoCalibration | None:
        """Calibrate on ``dataroot``'s prepared crops (:func:`nemopose.photo.calibration.calibrate`)
        and store it as ``<checkpoint>.photo.json`` (a folder that cannot be written keeps it
        in memory only, with a warning). ``required`` False: missing crops are a warning."""
        from .errors import DataNotFound
        from .photo.calibration import calibrate, calibration_record

        path = PhotoCalibration.path_for(checkpoint)
        log.info("photo calibration of %s (once per checkpoint, stored in %s)", self.category, path)
        try:
            calibration = calibrate(self, self.dataroot if self.dataroot is not None else "data")
        except DataNotFound as exc:
            if required:
                raise
            log.warning("no photo calibration (%s): object_found is left empty", exc)
            self.calibration = None
            return None
        try:
            calibration.save(path, **calibration_record(checkpoint, self.dataroot))
        except OSError as exc:
            log.warning("could not store the photo calibration at %s (%s); it is used for this run only", path, exc)
        return calibration

    @classmethod
    def from_experiment(cls, exproot: str | os.PathLike, category: str, *, epoch: str = "last",
                        mesh_d: str = "single", **kwargs: Any) -> "PosePredictor":
        """:meth:`from_checkpoint` with the checkpoint of an experiment folder (``epoch``:
        ``last``, a number, ``authors`` or a path)."""
        checkpoint = Experiment(exproot, mesh_d).resolve_checkpoint(constants.check_category(category), epoch)
        return cls.from_checkpoint(checkpoint, category, mesh_d=mesh_d, **kwargs)

    @property
    def calibration(self) -> PhotoCalibration | None:
        """The photo calibration (object sizes, presence threshold), or None."""
        return self._calibration

    @calibration.setter
    def calibration(self, value: PhotoCalibration | None) -> None:
        self._calibration = value
        if value is not None:
            self._sizes = value.object_sizes

    @property
    def object_sizes(self) -> ObjectSizes:
        """The training objects' size by box shape: the calibration's, else the prepared
        training set's (needs ``dataroot``)."""
        if self._sizes is None:
            if self.dataroot is None:
                raise UsageError("boxes need the object sizes of the training set: give dataroot= or a calibration")
            self._sizes = ObjectSizes.from_prepared(self.dataroot, self.category, self.image_scale)
        return self._sizes

    def detector(self):
        """The COCO detector (loaded, and its weights fetched, on first use)."""
        if self._detector is None:
            from .photo.detect import ObjectDetector

            self._detector = ObjectDetector.load(self.detector_name, device=self.device, download=self.download,
                                                 mirror=self.mirror)
        return self._detector

    # ------------------------------------------------------------------ the API

    def predict(self, images: Sequence[ImageInput] | ImageInput, boxes: Sequence[Sequence[BoxInput]] | None = None,
                *, detect: bool = False, min_score: float = 0.5, max_objects: int = 20,
                scale: float | None = None) -> list[Prediction]:
        """Poses of the objects in ``images``: one :class:`Prediction` per (image, box), in
        image order (a single image is accepted too).

        Args:
            images: file paths, PIL images or uint8 arrays.
            boxes: per image, a list of boxes (x0, y0, x1, y1) in its pixels (for a single
                image, its list of boxes).
            detect: find the boxes with the COCO detector (``min_score``: its confidence
                threshold; ``max_objects``: the most confident boxes kept per image); an
                image where it finds nothing gets one prediction with NaN pose and
                ``object_found=False``.
            scale: without boxes: the whole image at this scale (crop pixels per input
                pixel) instead of the scale search; with boxes: this scale for every box.
        """
        single = isinstance(images, (str, os.PathLike, Image.Image, np.ndarray))
        if single:
            images = [images]
            boxes = None if boxes is None else [boxes]
        arrays = [as_rgb_array(image) for image in images]
        if boxes is not None and detect:
            raise UsageError("give boxes or detect=True, not both")
        if boxes is not None and len(boxes) != len(arrays):
            raise UsageError(f"boxes: one list per image, got {len(boxes)} lists for {len(arrays)} images")
        for i, image_boxes in enumerate(boxes or []):
            if isinstance(image_boxes, Box) or (len(image_boxes) and np.isscalar(image_boxes[0])):
                raise UsageError(f"boxes: per image a list of boxes; image {i} got one box {tuple(image_boxes)}, "
                                 "write [[(x0, y0, x1, y1)]]")
        detector_scores: list[list[float | None]] | None = None
        if detect:
            found = [[d for d in dets if min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= MIN_DETECTED_SIDE]
                     [:max_objects] for dets in self.detector().detect(arrays, self.category, min_score=min_score)]
            boxes = [[Box.of(d.box) for d in dets] for dets in found]
            detector_scores = [[d.score for d in dets] for dets in found]
        if boxes is None:
            results = self._predict_whole(arrays, scale)
        else:
            jobs = []
            for i, (array, image_boxes) in enumerate(zip(arrays, boxes)):
                for k, value in enumerate(image_boxes):
                    box = Box.of(value)
                    if not box.overlaps(array.shape[:2]):
                        raise UsageError(f"image {i}: box {box.as_tuple()} lies outside the "
                                         f"{array.shape[1]}x{array.shape[0]} image")
                    rate = scale if scale is not None else self.object_sizes.scale_for(box)
                    jobs.append(_Job(i, box, crop_box(array, box, rate, self.crop_size),
                                     None if detector_scores is None else detector_scores[i][k]))
            self._solve_jobs(arrays, jobs, translation=bool(self.translation))
            results = [job.result for job in jobs]
            done = {job.image for job in jobs}
            results += [Prediction.nothing(i) for i in range(len(arrays)) if i not in done]
            results.sort(key=lambda p: p.image)      # stable: boxes keep their order
        return [self._decide(p) for p in results]

    # ------------------------------------------------------------------ the steps

    def _predict_whole(self, arrays: list[np.ndarray], scale: float | None) -> list[Prediction]:
        """Whole images: at ``scale``, or at each of :data:`WHOLE_IMAGE_SCALES` times the
        scale that would make the image the size of a training object, the principal point
        optimised; the best clutter margin (:class:`nemopose.photo.presence.Presence`) wins.
        The canvas around the image repeats its border pixels: on a black canvas a flat
        image of the car's colour is a car-coloured box, which the demo car took for a car
        (2 of 6 "yes"; with the border repeated, 0 of 6)."""
        translation = self.translation is not False
        best: list[_Job | None] = [None] * len(arrays)
        for factor in ((1.0,) if scale is not None else WHOLE_IMAGE_SCALES):
            jobs = []
            for i, array in enumerate(arrays):
                whole = Box.whole(array.shape[:2])
                rate = scale if scale is not None else factor * self.object_sizes.scale_for(whole)
                jobs.append(_Job(i, whole, place_image(array, self.crop_size, rate, pad="edge")))
            self._solve_jobs(arrays, jobs, translation, refine=False)
            for job in jobs:
                if best[job.image] is None or job.margin > best[job.image].margin:
                    best[job.image] = job
        return [job.result for job in best if job is not None]

    def _solve_jobs(self, arrays: list[np.ndarray], jobs: list[_Job], translation: bool,
                    refine: bool | None = None) -> None:
        """Solve every job's placement (grouped by canvas shape), then refine."""
        groups: dict[tuple[int, int], list[_Job]] = {}
        for job in jobs:
            groups.setdefault(job.placed.canvas.shape[:2], []).append(job)
        for shape, members in groups.items():
            map_size = (shape[0] // constants.DOWNSAMPLE_RATE, shape[1] // constants.DOWNSAMPLE_RATE)
            solvers = self._solvers(map_size, translation)
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                maps = self._feature_maps([job.placed.canvas for job in chunk])
                solutions = solve_over_meshes(solvers, self.meshes, maps)
                scores = self._scores(solvers, maps, solutions)
                for job, sol, (score, margin) in zip(chunk, solutions, scores):
                    result = self._prediction(sol, score, job)
                    h, w = arrays[job.image].shape[:2]
                    if not (abs(result.shift_x) <= w / 2 and abs(result.shift_y) <= h / 2) \
                            or is_flat(arrays[job.image], job.box.as_tuple()):
                        # the origin off the photo, or nothing to see in the box
                        result, margin = replace(result, score=IMPLAUSIBLE_SCORE), IMPLAUSIBLE_SCORE
                    job.result, job.margin = result, margin
        if self.refine if refine is None else refine:
            self._refine(arrays, jobs)

    def _refine(self, arrays: list[np.ndarray], jobs: list[_Job]) -> None:
        """Crop each boxed object again as the preparation crops a PASCAL3D+ object with its
        first pose (centred on the projected origin, resized to put it at distance 5;
        METHOD.md §16.1) and solve again.

        The origin: the box's centre plus the offset the training objects seen from the
        nearest viewpoints have between their box centre and their origin
        (:meth:`ObjectSizes.origin_offset`; the origin of a car seen from above projects
        above its box's centre); with the translation optimised, the solved principal
        point. Objects whose crop cannot be made keep their first pose. (Whole photos are
        not refined: on the synthetic release images it made them worse, 95 / 65 % within
        pi/6 / pi/18 and 6.9 degrees median on 20 photos against 95 / 70 % and 6.3 degrees.)"""
        pairs = []
        for job in jobs:
            p = job.result
            if not (p is not None and math.isfinite(p.distance) and p.distance > 0):
                continue
            h, w = arrays[job.image].shape[:2]
            origin = np.array([w / 2 + p.shift_x, h / 2 + p.shift_y])
            if self.translation is not True:
                origin = np.asarray(job.box.center) + self.object_sizes.origin_offset(p.azimuth, p.elevation, job.box)
            try:
                geo = crop_geometry(np.array(job.box.as_tuple()), origin, p.distance, (h, w), self.crop_size,
                                    self.image_scale, center="principal")
            except CropError as exc:
                log.debug("image %d: no refinement (%s)", job.image, exc)
                continue
            pairs.append((job, _Job(job.image, job.box, crop_placement(arrays[job.image], geo), job.detector_score)))
        if pairs:
            self._solve_jobs(arrays, [new for _, new in pairs], translation=self.translation is True,
                             refine=False)
        for job, new in pairs:
            job.result = new.result

    def _feature_maps(self, canvases: list[np.ndarray]) -> torch.Tensor:
        batch = torch.stack([normalize_image(torch.from_numpy(c).permute(2, 0, 1)) for c in canvases])
        with torch.no_grad():
            return self.model(batch.to(self.device)).float()

    def _scores(self, solvers: list[MeshPoseSolver], maps: torch.Tensor,
                solutions: list[MeshSolution]) -> list[tuple[float, float]]:
        """The presence score and clutter margin of each image's solution (with its winning
        mesh; :func:`nemopose.photo.presence.presence_scores`)."""
        scores = [(0.0, 0.0)] * len(solutions)
        for mesh, solver in zip(self.meshes, solvers):
            rows = [i for i, s in enumerate(solutions) if s.mesh == mesh.index]
            if not rows:
                continue
            poses = torch.tensor([[solutions[i].azimuth, solutions[i].elevation, solutions[i].theta,
                                   solutions[i].distance] for i in rows])
            shifts = torch.tensor([[solutions[i].shift_x, solutions[i].shift_y] for i in rows])
            values = presence_scores(solver, maps[rows], mesh.clutter, poses, shifts,
                                     render_distance_for_crop(self.crop_size, self.image_scale))
            for i, score, margin in zip(rows, values.score.tolist(), values.clutter_margin.tolist()):
                scores[i] = (score, margin)
        return scores

    def _solvers(self, map_size: tuple[int, int], translation: bool) -> list[MeshPoseSolver]:
        """One solver per mesh for maps of ``map_size`` (the render camera keeps the training
        crops' focal length, so a larger canvas only widens the field of view)."""
        key = (map_size, translation)
        if key in self._solver_cache:
            self._solver_cache.move_to_end(key)
        else:
            while len(self._solver_cache) >= SOLVER_CACHE_SIZE:     # photos of many sizes: keep the recent ones
                self._solver_cache.popitem(last=False)
            config = self.solver_config
            if translation:
                config = replace(config, optimize_translation=True, init_shifts=shift_grid(map_size))
            self._solver_cache[key] = [
                MeshPoseSolver(m.verts, m.faces, m.vertex_features, map_size, constants.RENDER_DISTANCE[self.category],
                               config, self.device, render_size=max(self.map_size)) for m in self.meshes]
        return self._solver_cache[key]

    def _prediction(self, sol: MeshSolution, score: float, job: _Job) -> Prediction:
        """Solver output (map pixels, render distance) -> input-image pixels, PASCAL3D+ distance."""
        stride, placed = constants.DOWNSAMPLE_RATE, job.placed
        return Prediction(
            azimuth=sol.azimuth, elevation=sol.elevation, theta=sol.theta,
            distance=float(geometry.pascal_distance(sol.distance, placed.scale, self.map_size)),
            render_distance=sol.distance,
            shift_x=(sol.shift_x * stride + placed.offset[0]) / placed.scale,
            shift_y=(sol.shift_y * stride + placed.offset[1]) / placed.scale,
            loss=sol.loss, mesh=sol.mesh, image=job.image, box=job.box.as_tuple(), scale=placed.scale,
            score=float(score), detector_score=job.detector_score)

    def _decide(self, p: Prediction) -> Prediction:
        """``object_found`` from the calibrated threshold (kept False where nothing was found)."""
        if p.object_found is False and p.box is None:
            return p
        if self.calibration is None or self.calibration.threshold is None:
            if self.calibration is None and not self._warned_uncalibrated:
                log.warning("no photo calibration for this checkpoint: object_found is left empty "
                            "(python -m nemopose.predict --calibrate ... writes it)")
                self._warned_uncalibrated = True
            return p
        return replace(p, object_found=bool(p.score >= self.calibration.threshold))

    # ------------------------------------------------------------------ pictures

    def overlay(self, image: ImageInput, predictions: Sequence[Prediction]) -> np.ndarray:
        """The image at its own resolution with each object's box and mesh drawn over it,
        (H, W, 3) uint8 (:func:`nemopose.photo.draw.draw_predictions`)."""
        from .photo.draw import draw_predictions

        return draw_predictions(as_rgb_array(image), predictions, self.meshes, max(self.crop_size))


def main(argv: list[str] | None = None) -> int:
    """``python -m nemopose.predict`` (:func:`nemopose.photo.command.main`)."""
    from .photo.command import main as command

    return command(argv)


if __name__ == "__main__":
    from .cli import run

    raise SystemExit(run(main))
