"""Pose estimation: Adam over the camera pose from the best initial pose, batched over images
and starts (METHOD.md §11). The loss itself is :mod:`nemopose.solve.score`'s.

The pose is the camera centre ``C`` (3) and in-plane rotation ``theta`` (plus, for
unlabeled images, a 2D shift of the principal point); it starts from the best of 144
pre-rasterised poses (azimuth x elevation x theta grid at the category's render distance)
and is refined by Adam (lr 0.05, betas (0.4, 0.6), 300 steps, lr x0.2 after steps 100,
200, 300). All images and starts are solved together: Adam and the schedule act
element-wise, so optimising the summed loss of B problems is the same as B separate runs.
Images are solved in chunks whose size follows the device's memory
(:func:`chunk_budget_bytes`).

Distances here are render distances (:mod:`nemopose.geometry`, "distance units").
"""

from __future__ import annotations

import collections
import logging
import math
from dataclasses import dataclass, fields, replace
from typing import Any, Iterator

import numpy as np
import torch

from .. import geometry
from .score import BACKENDS, METHODS, ImageBatch, PoseScorer
from .steps import GRAPH_MODES, AdamSteps

log = logging.getLogger(__name__)

__all__ = ["SolverConfig", "initial_poses", "solve_pose", "MeshPoseSolver", "chunk_budget_bytes"]


@dataclass
class SolverConfig:
    """Pose-solver settings; the defaults are the original's (METHOD.md §11).

    Attributes:
        steps: Adam steps.
        lr, betas: Adam settings.
        lr_decay, lr_decay_every: multiply the learning rate by ``lr_decay`` after every
            ``lr_decay_every`` steps.
        azimuth_samples: initial azimuths ``linspace(0, 2 pi, n, endpoint=False)``.
        elevation_range, elevation_samples: initial elevations ``linspace(lo, hi, n)``.
        theta_range, theta_samples: initial in-plane rotations ``linspace(lo, hi, n)``.
        use_clutter: the clutter model (off: loss = 1 - mean s_o).
        num_starts: optimise from the ``num_starts`` best initial poses and keep the one
            with the lowest final loss (1 = the original).
        early_stop_tol: stop when every problem's loss changed by less than this over the
            last ``early_stop_patience`` steps (None = never, the original).
        perspective_correct: rasteriser barycentrics (see :func:`render.rasterize`).
        cull_backfaces: cull the faces seen from behind (same results for a closed convex
            mesh such as the cuboids, about twice as fast); None (default): when the mesh
            is closed and convex; see :class:`nemopose.solve.score.PoseScorer`.
        method: "similarity" (fast, default) or "render" (explicit feature rendering).
        backend: "auto" (default: two fused Triton kernels per step on CUDA, one Numba
            kernel per step on the CPU), "torch", "triton" or "numba"
            (:func:`nemopose.solve.score.resolve_backend`). On
            first use the scorer checks the Triton loss and gradient against PyTorch's on a
            few poses; if they fail or disagree it warns and uses PyTorch.
        chunk_bytes: memory budget of a chunk of images solved together; None (default)
            sizes it from the device (:func:`chunk_budget_bytes`).
        record_trajectory: also return the loss and pose after every step.
        cuda_graphs: "auto" (default): on CUDA with the Triton backend, capture the whole
            Adam step in a CUDA graph once per chunk shape and replay it (the last chunk is
            padded to the captured shape; a failing capture falls back to eager steps with
            one warning); "off": eager steps. Inactive on the CPU.
        optimize_translation: also optimise a 2D shift of the principal point (in
            feature-map pixels), for unlabeled images whose object is only roughly centred
            (the original's PredUnlabeledDataset); off for PASCAL3D+ evaluation.
        init_shifts: principal-point shifts (x, y) in map pixels tried with every initial
            pose (with ``optimize_translation``; the grid then has K x len(init_shifts)
            entries, shift fastest).
    """

    steps: int = 300
    lr: float = 0.05
    betas: tuple[float, float] = (0.4, 0.6)
    lr_decay: float = 0.2
    lr_decay_every: int = 100
    azimuth_samples: int = 12
    elevation_range: tuple[float, float] = (-math.pi / 6, math.pi / 3)
    elevation_samples: int = 4
    theta_range: tuple[float, float] = (-math.pi / 6, math.pi / 6)
    theta_samples: int = 3
    use_clutter: bool = True
    num_starts: int = 1
    early_stop_tol: float | None = None
    early_stop_patience: int = 20
    perspective_correct: bool = False
    cull_backfaces: bool | None = None
    method: str = "similarity"
    backend: str = "auto"
    chunk_bytes: int | None = None
    record_trajectory: bool = False
    optimize_translation: bool = False
    init_shifts: tuple[tuple[float, float], ...] = ((0.0, 0.0),)
    cuda_graphs: str = "auto"

    def __post_init__(self) -> None:
        if self.cuda_graphs not in GRAPH_MODES:
            raise ValueError(f"cuda_graphs must be one of {GRAPH_MODES}, got {self.cuda_graphs!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.num_starts < 1:
            raise ValueError(f"num_starts must be >= 1, got {self.num_starts}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        self.init_shifts = tuple((float(x), float(y)) for x, y in self.init_shifts)
        if not self.init_shifts or (not self.optimize_translation and self.init_shifts != ((0.0, 0.0),)):
            raise ValueError("init_shifts needs optimize_translation (and at least one shift)")


def initial_poses(config: SolverConfig | None = None) -> torch.Tensor:
    """The grid of initial poses, in the original's order (azimuth slowest, theta fastest).

    Returns:
        (K, 3) float64 tensor of (azimuth, elevation, theta); K = 144 by default.
    """
    cfg = config or SolverConfig()
    az = np.linspace(0, 2 * np.pi, cfg.azimuth_samples, endpoint=False)
    el = np.linspace(*cfg.elevation_range, cfg.elevation_samples)
    th = np.linspace(*cfg.theta_range, cfg.theta_samples)
    grid = np.array([[a, e, t] for a in az for e in el for t in th], dtype=np.float64)
    return torch.from_numpy(grid)


def _adam_lr(step: int, cfg: SolverConfig) -> float:
    """Learning rate used at ``step`` (0-based): decays after every ``lr_decay_every`` steps."""
    return cfg.lr * cfg.lr_decay ** (step // cfg.lr_decay_every) if cfg.lr_decay_every > 0 else cfg.lr


CPU_CHUNK_BYTES = 512 * 2 ** 20
EARLY_STOP_READ_EVERY = 25      # on CUDA: steps between two reads of the early-stop flag


def chunk_budget_bytes(device: torch.device) -> int:
    """Memory for one chunk of images: on CUDA most of the free memory (the step is
    launch-bound, so the larger the chunk the faster), on the CPU 512 MB (larger chunks
    only page-fault more)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(CPU_CHUNK_BYTES, int(free * 0.6))
    return CPU_CHUNK_BYTES


@dataclass(frozen=True)
class SolveResult:
    """The poses :meth:`MeshPoseSolver.solve` found for B images: tensors on the CPU.

    Attributes:
        azimuth, elevation, theta: (B,) radians (the PASCAL3D+ convention).
        distance: (B,) render distance (:mod:`nemopose.geometry`, "distance units").
        loss: (B,) the final loss of the returned pose.
        init_index: (B,) index of the chosen initial pose in the grid; init_loss: (B,) its loss.
        shift_x, shift_y: (B,) principal-point shift in map pixels (``optimize_translation``),
            else None.
        loss_curve: (B, steps) and trajectory: (B, steps, 4) = (azimuth, elevation, theta,
            distance) after each step (``record_trajectory``), else None.

    ``result["azimuth"]`` reads a field by name (for loops over fields); :meth:`keys` names
    the fields that are set.
    """

    azimuth: torch.Tensor
    elevation: torch.Tensor
    theta: torch.Tensor
    distance: torch.Tensor
    loss: torch.Tensor
    init_index: torch.Tensor
    init_loss: torch.Tensor
    shift_x: torch.Tensor | None = None
    shift_y: torch.Tensor | None = None
    loss_curve: torch.Tensor | None = None
    trajectory: torch.Tensor | None = None

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.keys():
            raise KeyError(name)
        return getattr(self, name)

    def __contains__(self, name: object) -> bool:
        return name in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def items(self) -> list[tuple[str, torch.Tensor]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    @staticmethod
    def concat(parts: list[SolveResult]) -> SolveResult:
        """The results of consecutive chunks as one."""
        return SolveResult(**{k: torch.cat([p[k] for p in parts]) for k in parts[0].keys()})


class MeshPoseSolver:
    """Solves the poses of many images against one neural mesh.

    Holds what all images of a mesh share: the :class:`nemopose.solve.score.PoseScorer` and the
    pre-rasterised initial poses (computed once, reused by every chunk).

    Args:
        verts: (V, 3) CAD-frame vertices; faces: (F, 3).
        vertex_features: (V, C) unit vectors.
        map_size: (h, w) of the feature maps.
        init_distance: render distance of the initial poses (per category, constants).
        config: :class:`SolverConfig`.
        device: where to compute.
        render_size: the render camera's square side (see :class:`PoseScorer`).
    """

    def __init__(self, verts, faces, vertex_features, map_size: tuple[int, int], init_distance: float,
                 config: SolverConfig | None = None, device: torch.device | str = "cpu",
                 render_size: int | None = None) -> None:
        self.config = config or SolverConfig()
        self.device = torch.device(device)
        self.scorer = PoseScorer(verts, faces, vertex_features, map_size, method=self.config.method,
                                 perspective_correct=self.config.perspective_correct,
                                 cull_backfaces=self.config.cull_backfaces, device=self.device,
                                 render_size=render_size, backend=self.config.backend)
        self.map_size = self.scorer.map_size
        self.init_distance = float(init_distance)
        self.init_grid = initial_poses(self.config).to(self.device, torch.float32)   # (K, 3)
        shifts = torch.tensor(self.config.init_shifts, dtype=torch.float32, device=self.device)   # (T, 2)
        n_shifts = shifts.shape[0]
        az, el, th = self.init_grid.repeat_interleave(n_shifts, 0).unbind(1)           # (K * T,), shift fastest
        self.init_centers = geometry.camera_center(az, el, torch.full_like(az, self.init_distance))
        self.init_thetas = th
        self.init_shifts = shifts.repeat(self.init_grid.shape[0], 1) if self.config.optimize_translation else None
        with torch.no_grad():
            self.init_fragments = self.scorer.rasterize(self.init_centers, self.init_thetas, self.init_shifts)
        self.graph_mode = "eager"            # how the last solve stepped: "graph" or "eager"
        self._graph_failure: str | None = None   # a failed capture: warned once, then eager

    @property
    def graphs_wanted(self) -> bool:
        """Whether :meth:`solve` tries CUDA graphs (``config.cuda_graphs``, CUDA, the
        similarity method, no earlier failure)."""
        return (self.config.cuda_graphs == "auto" and self.device.type == "cuda" and self.config.method == "similarity"
                and self._graph_failure is None)

    # the mesh, for the tools that draw it
    verts = property(lambda self: self.scorer.verts)
    faces = property(lambda self: self.scorer.faces)
    vertex_features = property(lambda self: self.scorer.vertex_features)
    camera = property(lambda self: self.scorer.camera)

    def prepare(self, feature_maps: torch.Tensor, clutter: torch.Tensor | None,
                out: ImageBatch | None = None) -> ImageBatch:
        if self.config.use_clutter and clutter is None:
            raise ValueError("the clutter model is on but no clutter vector was given")
        return self.scorer.prepare(feature_maps, clutter if self.config.use_clutter else None, out=out)

    def initial_losses(self, feature_maps: torch.Tensor, clutter: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of every initial pose (and shift) for every image, (B, K * T)."""
        return self.scorer.grid_losses(self.prepare(feature_maps, clutter), self.init_fragments)

    def losses_at(self, feature_maps: torch.Tensor, clutter: torch.Tensor | None, poses: torch.Tensor,
                  image_index: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of arbitrary poses (N, 4) = (azimuth, elevation, theta, render distance), no
        optimisation, e.g. for loss landscapes; see :meth:`PoseScorer.losses_at`."""
        return self.scorer.losses_at(self.prepare(feature_maps, clutter), poses, image_index)

    def solve(self, feature_maps: torch.Tensor, clutter: torch.Tensor | None = None,
              progress: Any = None) -> SolveResult:
        """Solve the poses of a batch of images (in memory-bounded chunks).

        Args:
            feature_maps: (B, C, h, w) unit-length feature maps.
            clutter: (C,) unit clutter vector (required when the clutter model is on).
            progress: optional callable ``progress(n_done_images)``.
        Returns:
            :class:`SolveResult` (tensors on the CPU).
        """
        self.scorer.check_maps(feature_maps)
        total = feature_maps.shape[0]
        chunk = min(self.images_per_chunk(feature_maps.shape[1]), max(total, 1))
        graphs = self.graphs_wanted
        steppers: dict[int, _Chunk] = {}    # one per chunk shape: with graphs, its captured step
        self.graph_mode = "eager"
        results = []
        for start in range(0, total, chunk):
            maps = feature_maps[start:start + chunk]
            n = maps.shape[0]
            if graphs and n < chunk:         # the last chunk, padded to the captured shape
                maps = torch.cat([maps, maps[:1].expand(chunk - n, *maps.shape[1:])])
            res = self._solve_chunk(maps, clutter, steppers if graphs else None)
            results.append(SolveResult(**{k: v[:n] for k, v in res.items()}))
            if progress is not None:
                progress(min(start + chunk, total))
        return SolveResult.concat(results)

    def images_per_chunk(self, channels: int) -> int:
        """How many images :meth:`solve` solves together: the memory budget
        (``config.chunk_bytes``, or :func:`chunk_budget_bytes` of the device) over the
        per-image tables (similarity table and maps, float32)."""
        budget = self.config.chunk_bytes or chunk_budget_bytes(self.device)
        per_image = 4 * self.scorer.num_pixels * (self.verts.shape[0] + channels) * max(1, self.config.num_starts)
        return max(1, int(budget // per_image))

    def _solve_chunk(self, feature_maps: torch.Tensor, clutter: torch.Tensor | None,
                     steppers: dict[int, "_Chunk"] | None = None) -> dict[str, torch.Tensor]:
        """Solve one chunk; ``steppers`` (with CUDA graphs): the chunks of earlier shapes,
        whose tensors and captured step are reused for a chunk of the same shape."""
        cfg = self.config
        reuse = steppers.get(feature_maps.shape[0]) if steppers is not None else None
        with torch.no_grad():
            images = self.prepare(feature_maps, clutter, out=reuse.images if reuse is not None else None)
            init_losses = self.scorer.grid_losses(images, self.init_fragments)      # (B, K)
        b = len(images)
        starts = min(cfg.num_starts, init_losses.shape[1])
        # torch.topk is not guaranteed stable; sort keeps the first of equal losses (argmin).
        order = torch.sort(init_losses, dim=1, stable=True).indices[:, :starts]   # (B, S)
        chosen = order.reshape(-1)
        init = [self.init_centers.index_select(0, chosen), self.init_thetas.index_select(0, chosen)]
        if cfg.optimize_translation:
            init.append(self.init_shifts.index_select(0, chosen))
        if reuse is not None:
            chunk = reuse
            chunk.steps.restart(init)
        else:
            chunk = _Chunk(self, images, torch.arange(b, device=self.device).repeat_interleave(starts),  # (N,)
                           [v.clone().requires_grad_(True) for v in init], graphs=steppers is not None)
            if steppers is not None:
                steppers[feature_maps.shape[0]] = chunk
        center, theta = chunk.params[:2]
        shift = chunk.params[2] if cfg.optimize_translation else None
        steps = chunk.steps
        # Early stop: on the CPU tested after every step (reading a CPU tensor costs nothing);
        # on CUDA a device flag freezes the parameters (learning rate x 0) from the step the
        # test holds, and the host reads it every EARLY_STOP_READ_EVERY steps: the same poses.
        running = ran = None
        if cfg.early_stop_tol is not None and steps.cuda:
            running = torch.ones((), device=self.device)
            ran = torch.zeros((), device=self.device)
        history: collections.deque = collections.deque(maxlen=cfg.early_stop_patience + 1)
        curve, traj = [], []
        n_steps = cfg.steps
        for step in range(cfg.steps):
            steps.set_lr(_adam_lr(step, cfg), running)
            losses = steps.step().detach()
            if cfg.record_trajectory:
                curve.append(losses.clone())
                traj.append(self._read_pose(center.detach(), theta.detach()))
            if cfg.early_stop_tol is None:
                continue
            history.append(losses.clone())
            converged = None
            if len(history) == history.maxlen:
                converged = (history[-1] - history[0]).abs().max() < cfg.early_stop_tol
            if running is None:
                if converged is not None and converged:
                    n_steps = step + 1
                    break
            else:
                ran.add_(running)
                if converged is not None:
                    running.mul_(converged.logical_not().to(running.dtype))
                if (step + 1) % EARLY_STOP_READ_EVERY == 0 and not running:
                    break
        if ran is not None:
            n_steps = int(ran)
        if n_steps < cfg.steps:
            log.debug("early stop after %d steps", n_steps)
        curve, traj = curve[:n_steps], traj[:n_steps]
        self.graph_mode = steps.mode
        if steps.failure is not None and steps.failure.startswith("capture failed") and self._graph_failure is None:
            self._graph_failure = steps.failure
            log.warning("CUDA graph %s; solving with eager steps", steps.failure)
        # The loss of the returned pose (after the last update).
        with torch.no_grad():
            end_loss = self.scorer.losses(images, center, theta, chunk.image_index, shift).reshape(b, starts)
        pose = self._read_pose(center.detach(), theta.detach())                   # (N, 4)
        best = end_loss.argmin(1)                                                 # (B,)
        pick = torch.arange(b, device=self.device) * starts + best
        out = {
            "azimuth": pose[pick, 0], "elevation": pose[pick, 1], "theta": pose[pick, 2],
            "distance": pose[pick, 3], "loss": end_loss[torch.arange(b), best],
            "init_index": order[torch.arange(b), best], "init_loss": init_losses.min(1).values,
        }
        if shift is not None:
            out["shift_x"], out["shift_y"] = shift.detach()[pick, 0], shift.detach()[pick, 1]
        if cfg.record_trajectory and curve:
            out["loss_curve"] = torch.stack(curve, 1)[pick]
            out["trajectory"] = torch.stack(traj, 1)[pick]
        return {k: v.detach().cpu() for k, v in out.items()}

    @staticmethod
    def _read_pose(center: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """(N, 4) azimuth, elevation, theta, distance from camera centres and thetas."""
        az, el, dist = geometry.camera_angles(center)
        return torch.stack([az, el, theta, dist], 1)


class _Chunk:
    """One chunk's optimisation: its image tables, image index, parameters and Adam steps
    (with CUDA graphs reused, in place, by the next chunk of the same shape)."""

    def __init__(self, solver: MeshPoseSolver, images: ImageBatch, image_index: torch.Tensor,
                 params: list[torch.Tensor], graphs: bool) -> None:
        self.images, self.image_index, self.params = images, image_index, params
        scorer, cfg = solver.scorer, solver.config
        center, theta = params[:2]
        shift = params[2] if cfg.optimize_translation else None

        def can_capture() -> str | None:
            if scorer.backend != "triton":
                return f"the {scorer.backend} backend's step synchronises (no graph)"
            return None

        self.steps = AdamSteps(lambda: scorer.losses(images, center, theta, image_index, shift), params, cfg.lr,
                               cfg.betas, solver.device, graphs=graphs, can_capture=can_capture)


def solve_pose(feature_maps: torch.Tensor, verts, faces, vertex_features, clutter, init_distance: float,
               **options: Any) -> dict[str, torch.Tensor]:
    """Estimate the pose of B images against one neural mesh (the library entry point).

    Args:
        feature_maps: (B, C, h, w) unit-length feature maps.
        verts: (V, 3) PASCAL3D+ CAD-frame vertices; faces: (F, 3).
        vertex_features: (V, C) unit vectors (the feature bank's vertex rows).
        clutter: (C,) unit clutter vector, or None (then the clutter model is turned off).
        init_distance: render distance of the initial poses.
        **options: :class:`SolverConfig` fields, plus ``device``.
    Returns:
        :class:`SolveResult` (see :meth:`MeshPoseSolver.solve`).
    """
    device = options.pop("device", feature_maps.device)
    if clutter is None:
        options.setdefault("use_clutter", False)
    config = replace(SolverConfig(), **options)
    solver = MeshPoseSolver(verts, faces, vertex_features, tuple(feature_maps.shape[2:]), init_distance,
                            config=config, device=device)
    return solver.solve(feature_maps, clutter)
