"""Render-and-compare pose estimation, batched over images and starts (SPEC section 11).

For an image with a unit-length feature map ``F`` (C, h, w), a neural mesh (vertices,
faces, one unit feature per vertex) and a clutter vector ``c``:

    s_o(p) = <Fbar(p), F(p)>           Fbar = vertex features rendered at the pose (0 off the object)
    s_c(p) = <c, F(p)>                 clutter score
    loss   = 1 - (mean_p max(s_o, s_c) - mean_p s_c)     (or 1 - mean_p s_o without clutter)

The pose is the camera centre ``C`` (3) and in-plane rotation ``theta``; it starts from
the best of 144 pre-rendered poses and is refined by Adam (lr 0.05, betas (0.4, 0.6), 300
steps, lr x0.2 after steps 100, 200, 300).

Why it is fast. Rendering is linear in the vertex features, so
``s_o(p) = sum_k b_k(p) <feat[v_k], F(p)>``: with the table ``S = feat @ F`` (V, h*w),
computed once per image, every step only gathers three numbers per covered pixel instead of
rendering and comparing 128-d features (``method="similarity"``, the default; the explicit
``method="render"`` computes the same loss through :func:`render.render_features` and is
kept to test it). All images and starts are solved together: Adam and the schedule act
element-wise, so optimising the summed loss of B problems is the same as B separate runs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from . import geometry, render

log = logging.getLogger(__name__)

__all__ = ["SolverConfig", "initial_poses", "solve_pose", "pose_loss", "MeshPoseSolver"]


@dataclass
class SolverConfig:
    """Pose-solver settings; the defaults are the original's (SPEC 11).

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
        method: "similarity" (fast, default) or "render" (explicit feature rendering).
        chunk_bytes: memory budget of the per-image similarity tables; images are solved
            in chunks that fit it.
        record_trajectory: also return the loss and pose after every step.
        optimize_translation: also optimise a 2D shift of the principal point (in
            feature-map pixels), for unlabeled images whose object is only roughly centred
            (the original's PredUnlabeledDataset); off for PASCAL3D+ evaluation.
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
    method: str = "similarity"
    chunk_bytes: int = 512 * 2 ** 20
    record_trajectory: bool = False
    optimize_translation: bool = False

    def __post_init__(self) -> None:
        if self.method not in ("similarity", "render"):
            raise ValueError(f"method must be 'similarity' or 'render', got {self.method!r}")
        if self.num_starts < 1:
            raise ValueError(f"num_starts must be >= 1, got {self.num_starts}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")


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


def pose_loss(object_score: torch.Tensor, clutter_score: torch.Tensor | None) -> torch.Tensor:
    """NeMo's render-and-compare loss per problem.

    Args:
        object_score: (N, P) ``s_o`` over all pixels of the map (0 off the object).
        clutter_score: (N, P) ``s_c``, or None for the loss without the clutter model.
    Returns:
        (N,) ``1 - (mean max(s_o, s_c) - mean s_c)`` or ``1 - mean s_o``.
    """
    if clutter_score is None:
        return 1.0 - object_score.mean(1)
    return 1.0 - (torch.maximum(object_score, clutter_score).mean(1) - clutter_score.mean(1))


def _adam_lr(step: int, cfg: SolverConfig) -> float:
    """Learning rate used at ``step`` (0-based): decays after every ``lr_decay_every`` steps."""
    return cfg.lr * cfg.lr_decay ** (step // cfg.lr_decay_every) if cfg.lr_decay_every > 0 else cfg.lr


class MeshPoseSolver:
    """Solves poses of many images against one neural mesh.

    Holds what is shared by all images of a mesh: the mesh, its vertex features, the
    camera and the pre-rasterised initial poses (computed once, reused by every chunk).

    Args:
        verts: (V, 3) CAD-frame vertices; faces: (F, 3).
        vertex_features: (V, C) unit vectors.
        map_size: (h, w) of the feature maps.
        init_distance: camera distance of the initial poses (per category, constants).
        config: :class:`SolverConfig`.
        device: where to compute.
    """

    def __init__(self, verts, faces, vertex_features, map_size: tuple[int, int], init_distance: float,
                 config: SolverConfig | None = None, device: torch.device | str = "cpu") -> None:
        self.config = config or SolverConfig()
        self.device = torch.device(device)
        self.verts = torch.as_tensor(verts, dtype=torch.float32, device=self.device)
        self.faces = torch.as_tensor(faces, dtype=torch.long, device=self.device)
        self.vertex_features = torch.as_tensor(vertex_features, dtype=torch.float32, device=self.device)
        if self.verts.dim() != 2 or self.verts.shape[1] != 3:
            raise ValueError(f"verts must be (V, 3), got {tuple(self.verts.shape)}")
        if self.vertex_features.shape[0] != self.verts.shape[0]:
            raise ValueError(f"vertex_features must be (V={self.verts.shape[0]}, C), "
                             f"got {tuple(self.vertex_features.shape)}")
        self.map_size = (int(map_size[0]), int(map_size[1]))
        self.camera = render.RenderCamera(self.map_size, render_size=max(self.map_size))
        self.init_distance = float(init_distance)
        self.init_grid = initial_poses(self.config).to(self.device, torch.float32)   # (K, 3)
        az, el, th = self.init_grid.unbind(1)
        self.init_centers = geometry.camera_center(az, el, torch.full_like(az, self.init_distance))
        self.init_thetas = th
        with torch.no_grad():
            self.init_fragments = self._rasterize(self.init_centers, self.init_thetas)

    # ------------------------------------------------------------------ pieces

    def _rasterize(self, centers: torch.Tensor, thetas: torch.Tensor,
                   shift: torch.Tensor | None = None) -> render.Fragments:
        screen = render.project_vertices(self.verts, centers, thetas, self.camera)
        if shift is not None:   # principal-point translation (N, 2), x = column, y = row
            screen = screen + torch.cat([shift, torch.zeros_like(shift[:, :1])], 1).unsqueeze(1)
        return render.rasterize(screen, self.faces, self.map_size,
                                perspective_correct=self.config.perspective_correct)

    def _object_scores(self, fragments: render.Fragments, image_index: torch.Tensor,
                       sim: torch.Tensor | None, maps: torch.Tensor) -> torch.Tensor:
        """``s_o`` (N, P) of N rendered problems; ``image_index`` (N,) says which image each
        problem compares against (a row of ``sim`` (B, V, P) / ``maps`` (B, C, P))."""
        n = fragments.pix_to_face.shape[0]
        n_pix = self.map_size[0] * self.map_size[1]
        if self.config.method == "render":
            rendered = render.interpolate_vertex_features(fragments, self.faces, self.vertex_features)
            return (rendered.reshape(n, -1, n_pix) * maps.index_select(0, image_index)).sum(1)
        # similarity: s_o(p) = sum_k bary_k(p) * S[image, v_k(p), p]
        p2f = fragments.pix_to_face.reshape(-1)                                   # (N*P,)
        covered = torch.nonzero(p2f >= 0).squeeze(1)
        prob = torch.div(covered, n_pix, rounding_mode="floor")
        pix = covered - prob * n_pix
        vidx = self.faces.index_select(0, p2f.index_select(0, covered))           # (M, 3)
        n_verts = self.verts.shape[0]
        flat = ((image_index.index_select(0, prob) * n_verts).unsqueeze(1) + vidx) * n_pix + pix.unsqueeze(1)
        gathered = sim.reshape(-1).index_select(0, flat.reshape(-1)).reshape(-1, 3)   # (M, 3)
        bary = fragments.bary.reshape(-1, 3).index_select(0, covered)
        values = (bary * gathered).sum(1)
        return values.new_zeros(n * n_pix).index_put((covered,), values).reshape(n, n_pix)

    def _prepare_images(self, feature_maps: torch.Tensor, clutter: torch.Tensor | None):
        """Similarity tables (B, V, P), flattened maps (B, C, P) and clutter scores (B, P)."""
        maps = feature_maps.to(self.device, torch.float32)
        b, c = maps.shape[:2]
        maps = maps.reshape(b, c, -1)
        sim = None
        if self.config.method == "similarity":
            sim = torch.matmul(self.vertex_features.unsqueeze(0), maps)              # (B, V, P)
        clutter_score = None
        if self.config.use_clutter:
            if clutter is None:
                raise ValueError("the clutter model is on but no clutter vector was given")
            cl = torch.as_tensor(clutter, dtype=torch.float32, device=self.device).reshape(1, c, 1)
            clutter_score = (maps * cl).sum(1)                                       # (B, P)
        return sim, maps, clutter_score

    # ------------------------------------------------------------------ API

    def initial_losses(self, feature_maps: torch.Tensor, clutter: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of every initial pose for every image, (B, K)."""
        with torch.no_grad():
            sim, maps, clutter_score = self._prepare_images(feature_maps, clutter)
            return self._initial_losses(sim, maps, clutter_score)

    def _initial_losses(self, sim, maps, clutter_score) -> torch.Tensor:
        k = self.init_grid.shape[0]
        out = []
        for b in range(maps.shape[0]):
            index = torch.full((k,), b, dtype=torch.long, device=self.device)
            s_o = self._object_scores(self.init_fragments, index, sim, maps)
            s_c = clutter_score[b].expand(k, -1) if clutter_score is not None else None
            out.append(pose_loss(s_o, s_c))
        return torch.stack(out)

    def losses_at(self, feature_maps: torch.Tensor, clutter: torch.Tensor | None, poses: torch.Tensor,
                  image_index: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of arbitrary poses (no optimisation), e.g. for loss landscapes.

        Args:
            feature_maps: (B, C, h, w); clutter: (C,) or None.
            poses: (N, 4) azimuth, elevation, theta, distance.
            image_index: (N,) which image each pose is compared with (default: image 0).
        Returns:
            (N,) losses.
        """
        poses = torch.as_tensor(poses, dtype=torch.float32, device=self.device).reshape(-1, 4)
        if image_index is None:
            image_index = torch.zeros(poses.shape[0], dtype=torch.long, device=self.device)
        with torch.no_grad():
            sim, maps, clutter_score = self._prepare_images(feature_maps, clutter)
            centers = geometry.camera_center(poses[:, 0], poses[:, 1], poses[:, 3])
            fragments = self._rasterize(centers, poses[:, 2])
            s_c = clutter_score.index_select(0, image_index) if clutter_score is not None else None
            return pose_loss(self._object_scores(fragments, image_index, sim, maps), s_c).cpu()

    def solve(self, feature_maps: torch.Tensor, clutter: torch.Tensor | None = None,
              progress: Any = None) -> dict[str, torch.Tensor]:
        """Solve the poses of a batch of images (in memory-bounded chunks).

        Args:
            feature_maps: (B, C, h, w) unit-length feature maps.
            clutter: (C,) unit clutter vector (required when the clutter model is on).
            progress: optional callable ``progress(n_done_images)``.
        Returns:
            dict of (B,) tensors on the CPU: azimuth, elevation, theta, distance (PASCAL3D+
            convention, radians), loss (final), init_index (chosen initial pose), init_loss;
            with ``record_trajectory`` also loss_curve (B, steps) and trajectory
            (B, steps, 4) = (azimuth, elevation, theta, distance) after each step.
        """
        if feature_maps.dim() != 4 or tuple(feature_maps.shape[2:]) != self.map_size:
            raise ValueError(f"feature_maps must be (B, C, {self.map_size[0]}, {self.map_size[1]}), "
                             f"got {tuple(feature_maps.shape)}")
        if feature_maps.shape[1] != self.vertex_features.shape[1]:
            raise ValueError(f"feature dimension {feature_maps.shape[1]} != vertex feature "
                             f"dimension {self.vertex_features.shape[1]}")
        n_pix = self.map_size[0] * self.map_size[1]
        per_image = 4 * n_pix * (self.verts.shape[0] + feature_maps.shape[1]) * max(1, self.config.num_starts)
        chunk = max(1, int(self.config.chunk_bytes // per_image))
        results = []
        for start in range(0, feature_maps.shape[0], chunk):
            results.append(self._solve_chunk(feature_maps[start:start + chunk], clutter))
            if progress is not None:
                progress(min(start + chunk, feature_maps.shape[0]))
        return {k: torch.cat([r[k] for r in results]) for k in results[0]}

    def _solve_chunk(self, feature_maps: torch.Tensor, clutter: torch.Tensor | None) -> dict[str, torch.Tensor]:
        cfg = self.config
        with torch.no_grad():
            sim, maps, clutter_score = self._prepare_images(feature_maps, clutter)
            init_losses = self._initial_losses(sim, maps, clutter_score)            # (B, K)
        b = maps.shape[0]
        starts = min(cfg.num_starts, init_losses.shape[1])
        # torch.topk is not guaranteed stable; sort keeps the first of equal losses (argmin).
        order = torch.sort(init_losses, dim=1, stable=True).indices[:, :starts]   # (B, S)
        image_index = torch.arange(b, device=self.device).repeat_interleave(starts)  # (N,)
        chosen = order.reshape(-1)
        center = self.init_centers.index_select(0, chosen).clone().requires_grad_(True)
        theta = self.init_thetas.index_select(0, chosen).clone().requires_grad_(True)
        s_c = clutter_score.index_select(0, image_index) if clutter_score is not None else None

        params = [center, theta]
        shift = None
        if cfg.optimize_translation:
            shift = torch.zeros(center.shape[0], 2, device=self.device, requires_grad=True)
            params.append(shift)
        optim = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)
        curve, traj, history = [], [], []
        final_loss = None
        for step in range(cfg.steps):
            for group in optim.param_groups:
                group["lr"] = _adam_lr(step, cfg)
            fragments = self._rasterize(center, theta, shift)
            losses = pose_loss(self._object_scores(fragments, image_index, sim, maps), s_c)   # (N,)
            optim.zero_grad(set_to_none=True)
            losses.sum().backward()
            optim.step()
            final_loss = losses.detach()
            if cfg.record_trajectory:
                curve.append(final_loss.clone())
                traj.append(self._read_pose(center.detach(), theta.detach()))
            if cfg.early_stop_tol is not None:
                history.append(final_loss)
                if (len(history) > cfg.early_stop_patience and
                        (history[-1] - history[-1 - cfg.early_stop_patience]).abs().max() < cfg.early_stop_tol):
                    log.debug("early stop after %d steps", step + 1)
                    break
        # The loss of the returned pose (after the last update).
        with torch.no_grad():
            fragments = self._rasterize(center, theta, shift)
            end_loss = pose_loss(self._object_scores(fragments, image_index, sim, maps), s_c)
        pose = self._read_pose(center.detach(), theta.detach())                   # (N, 4)
        end_loss = end_loss.reshape(b, starts)
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


def solve_pose(feature_maps: torch.Tensor, verts, faces, vertex_features, clutter, init_distance: float,
               **options: Any) -> dict[str, torch.Tensor]:
    """Estimate the pose of B images against one neural mesh (the library entry point).

    Args:
        feature_maps: (B, C, h, w) unit-length feature maps.
        verts: (V, 3) PASCAL3D+ CAD-frame vertices; faces: (F, 3).
        vertex_features: (V, C) unit vectors (the feature bank's vertex rows).
        clutter: (C,) unit clutter vector, or None (then the clutter model is turned off).
        init_distance: camera distance of the initial poses.
        **options: :class:`SolverConfig` fields, plus ``device``.
    Returns:
        dict of (B,) tensors: azimuth, elevation, theta, distance (radians, PASCAL3D+
        convention), loss, init_index, init_loss (see :meth:`MeshPoseSolver.solve`).
    """
    device = options.pop("device", feature_maps.device)
    if clutter is None:
        options.setdefault("use_clutter", False)
    config = replace(SolverConfig(), **options)
    solver = MeshPoseSolver(verts, faces, vertex_features, tuple(feature_maps.shape[2:]), init_distance,
                            config=config, device=device)
    return solver.solve(feature_maps, clutter)
