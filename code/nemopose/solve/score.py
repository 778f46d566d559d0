"""Scoring camera poses against feature maps: NeMo's render-and-compare loss (METHOD.md §11).

For an image with a unit-length feature map ``F`` (C, h, w), a neural mesh (vertices,
faces, one unit feature per vertex) and a clutter vector ``c``:

    s_o(p) = <Fbar(p), F(p)>           Fbar = vertex features rendered at the pose (0 off the object)
    s_c(p) = <c, F(p)>                 clutter score
    loss   = 1 - (mean_p max(s_o, s_c) - mean_p s_c)     (or 1 - mean_p s_o without clutter)

:class:`PoseScorer` computes this loss for any poses of a batch of images: what the pose
optimiser (:mod:`nemopose.solve.solver`), the initialisation grid and the loss landscapes need.

Why it is fast. Rendering is linear in the vertex features, so
``s_o(p) = sum_k b_k(p) <feat[v_k], F(p)>``: with the table ``S = feat @ F`` (V, h*w),
computed once per image (:meth:`PoseScorer.prepare`), scoring a pose only gathers three
numbers per covered pixel instead of rendering and comparing 128-d features
(``method="similarity"``, the default; ``method="render"`` computes the same loss through
:func:`nemopose.render.render_features` and is kept to test it). Both the pose loss
(:meth:`PoseScorer.losses`, every optimiser step) and the scoring of every image against the
same pre-rasterised poses (:meth:`PoseScorer.grid_losses`, the 144 initial poses) visit only
the covered pixels (:func:`nemopose.render.rasterize_covered`): off the object
``max(s_o, s_c) = max(0, s_c)``, whose mean is known per image (:func:`covered_pose_loss`).
The cuboids are closed and convex, so the rasteriser culls their back faces (same images,
half the faces; ``cull_backfaces``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .. import geometry, mesh
from ..render import raster as render
from ..errors import UsageError

log = logging.getLogger(__name__)

METHODS = ("similarity", "render")
BACKENDS = ("auto", "torch", "triton", "numba")


def resolve_backend(backend: str, device: torch.device, *, method: str = "similarity",
                    perspective_correct: bool = False) -> str:
    """The backend of :meth:`PoseScorer.losses`: "torch" (plain PyTorch, the reference),
    "triton" (two fused kernels, :mod:`nemopose.solve.score_triton`) or "numba" (one compiled
    CPU kernel per step, :mod:`nemopose.solve.score_numba`). "auto": Triton on CUDA and Numba
    on the CPU when they can run there (their package, screen-space barycentrics, the
    similarity method), PyTorch otherwise; "triton" and "numba" raise when they cannot run."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "numba" or (backend == "auto" and device.type == "cpu"):
        from . import score_numba
        return _compiled_backend("numba", "Numba", score_numba, backend, device, method, perspective_correct)
    if backend == "torch" or (backend == "auto" and device.type != "cuda"):
        return "torch"
    from . import score_triton
    return _compiled_backend("triton", "Triton", score_triton, backend, device, method, perspective_correct)


def _compiled_backend(name: str, label: str, module, backend: str, device: torch.device, method: str,
                      perspective_correct: bool) -> str:
    """``name`` where ``module``'s kernels can run these settings, else "torch"; asked for
    explicitly (``backend == name``) and unable to run, it raises instead."""
    reason = module.unavailable_reason(device)
    if reason is None and perspective_correct:
        reason = f"the {label} kernels use screen-space barycentrics (perspective_correct=False)"
    if reason is None and method != "similarity":
        reason = f"the {label} kernels implement method='similarity', not {method!r}"
    if reason is not None and backend == name:
        raise UsageError(f"solver backend {name!r} cannot run here: {reason}; use 'auto' or 'torch'")
    return "torch" if reason is not None else name


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


def covered_sum(object_score: torch.Tensor, clutter_score: torch.Tensor | None, owner: torch.Tensor,
                n_owners: int) -> torch.Tensor:
    """Per problem, the sum over its covered pixels of ``max(s_o, s_c) - max(0, s_c)`` (of
    ``s_o`` without the clutter model): what the covered pixels add to ``sum_p max(s_o, s_c)``
    over the uncovered value ``max(0, s_c)``.

    Args:
        object_score, clutter_score: (..., M) ``s_o`` and ``s_c`` at M covered pixels
            (``clutter_score`` None without the clutter model).
        owner: (M,) the problem (pose) of each covered pixel, in [0, n_owners).
    Returns:
        (..., n_owners).
    """
    if clutter_score is None:
        delta = object_score
    else:
        delta = torch.maximum(object_score, clutter_score) - clutter_score.clamp(min=0)
    # scatter_add_ is several times faster than index_add_ on the CPU (same sums, same order)
    return delta.new_zeros(delta.shape[:-1] + (n_owners,)).scatter_add_(-1, owner.expand_as(delta), delta)


def covered_pose_loss(total: torch.Tensor, offset: torch.Tensor | None, n_pix: int) -> torch.Tensor:
    """:func:`pose_loss` from the covered pixels only.

    With ``s_o = 0`` off the object, ``sum_p max(s_o, s_c) = sum_p max(0, s_c) +`` the
    :func:`covered_sum`, so the loss is ``1 - offset - covered_sum / P`` with the per-image
    ``offset = mean_p max(0, s_c) - mean_p s_c`` (:attr:`ImageBatch.clutter_offset`; None
    without the clutter model, where the loss is ``1 - covered_sum / P``).
    """
    return 1.0 - total / n_pix if offset is None else 1.0 - (offset + total / n_pix)


@dataclass(frozen=True)
class ImageBatch:
    """What scoring needs of B feature maps, computed once by :meth:`PoseScorer.prepare`.

    Attributes:
        maps: (B, C, P) flattened unit feature maps (P = h * w).
        sim: (B, V, P) the table ``vertex_features @ maps`` (``method="similarity"``), else None.
        clutter_score: (B, P) ``s_c``, or None when the clutter model is off.
        clutter_offset: (B,) ``mean_p max(0, s_c) - mean_p s_c`` (see
            :func:`covered_pose_loss`), or None when the clutter model is off.
    """

    maps: torch.Tensor
    sim: torch.Tensor | None
    clutter_score: torch.Tensor | None
    clutter_offset: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.maps.shape[0]


class PoseScorer:
    """The loss of camera poses of one neural mesh against batches of feature maps.

    Args:
        verts: (V, 3) CAD-frame vertices; faces: (F, 3).
        vertex_features: (V, C) unit vectors.
        map_size: (h, w) of the feature maps; the render camera is
            :class:`nemopose.render.RenderCamera` over it.
        render_size: side S of the render camera's square (its focal length is
            ``(S / 2) / tan 6``); default ``max(map_size)``. Maps larger than the training
            crops (unlabeled images) keep the training S, so objects keep their distance.
        method: "similarity" (default) or "render" (explicit feature rendering, for tests).
        perspective_correct: rasteriser barycentrics (see :func:`nemopose.render.rasterize`).
        cull_backfaces: drop the faces seen from behind before rasterising (same images for
            a closed convex mesh, half the work; :func:`nemopose.render.rasterize`). None
            (default): when the mesh is closed and convex
            (:func:`nemopose.mesh.convex_face_orientation`); True: required (raises
            otherwise); False: never.
        device: where to compute.
        backend: how :meth:`losses` computes (see :func:`resolve_backend`): "auto"
            (default: Triton kernels on CUDA, a Numba kernel on the CPU), "torch", "triton"
            or "numba".
    """

    def __init__(self, verts, faces, vertex_features, map_size: tuple[int, int], *, method: str = "similarity",
                 perspective_correct: bool = False, cull_backfaces: bool | None = None,
                 device: torch.device | str = "cpu", render_size: int | None = None, backend: str = "auto") -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.device = torch.device(device)
        self.verts = torch.as_tensor(verts, dtype=torch.float32, device=self.device)
        self.faces = torch.as_tensor(faces, dtype=torch.long, device=self.device)
        self.vertex_features = torch.as_tensor(vertex_features, dtype=torch.float32, device=self.device)
        if self.verts.dim() != 2 or self.verts.shape[1] != 3:
            raise ValueError(f"verts must be (V, 3), got {tuple(self.verts.shape)}")
        if self.vertex_features.dim() != 2 or self.vertex_features.shape[0] != self.verts.shape[0]:
            raise ValueError(f"vertex_features must be (V={self.verts.shape[0]}, C), "
                             f"got {tuple(self.vertex_features.shape)}")
        self.map_size = (int(map_size[0]), int(map_size[1]))
        self.camera = render.RenderCamera(self.map_size, render_size=render_size)
        self.method = method
        self.perspective_correct = perspective_correct
        self.backend = resolve_backend(backend, self.device, method=method, perspective_correct=perspective_correct)
        self._kernel_mesh = None                   # the faces as the Triton kernels read them
        self._numba_camera = self._numba_grid = None  # the Numba kernels' mesh and initial poses
        self.face_orientation = None               # (F,) outward orientation when culling
        if cull_backfaces or cull_backfaces is None:
            orientation = mesh.convex_face_orientation(self.verts.cpu().numpy(), self.faces.cpu().numpy())
            if orientation is None and cull_backfaces:
                raise ValueError("cull_backfaces needs a closed convex mesh")
            if orientation is not None:
                self.face_orientation = torch.as_tensor(orientation, device=self.device)

    @property
    def cull_backfaces(self) -> bool:
        return self.face_orientation is not None

    @property
    def num_pixels(self) -> int:
        return self.map_size[0] * self.map_size[1]

    @property
    def feature_dim(self) -> int:
        return self.vertex_features.shape[1]

    # ------------------------------------------------------------------ images

    def check_maps(self, feature_maps: torch.Tensor) -> None:
        """Raise ValueError unless ``feature_maps`` is (B, C, h, w) with this scorer's map size
        and feature dimension."""
        if feature_maps.dim() != 4 or tuple(feature_maps.shape[2:]) != self.map_size:
            raise ValueError(f"feature_maps must be (B, C, {self.map_size[0]}, {self.map_size[1]}), "
                             f"got {tuple(feature_maps.shape)}")
        if feature_maps.shape[1] != self.feature_dim:
            raise ValueError(f"feature dimension {feature_maps.shape[1]} != vertex feature dimension "
                             f"{self.feature_dim}")

    def prepare(self, feature_maps: torch.Tensor, clutter: torch.Tensor | None,
                out: ImageBatch | None = None) -> ImageBatch:
        """Per-image tables of B unit feature maps (B, C, h, w); ``clutter`` (C,) or None
        (then the loss is the one without the clutter model). ``out``: an earlier batch of
        the same shape whose tables are overwritten in place (the solver's CUDA graphs read
        them there; no second copy of the large similarity table)."""
        self.check_maps(feature_maps)
        maps = feature_maps.to(self.device, torch.float32)
        b, c = maps.shape[:2]
        maps = maps.reshape(b, c, -1)
        if out is not None and ((out.sim is None) != (self.method != "similarity")
                                or (out.clutter_score is None) != (clutter is None)
                                or out.maps.shape != maps.shape):
            raise ValueError("prepare: out does not match these maps")
        sim = None
        if self.method == "similarity":
            sim = torch.matmul(self.vertex_features.unsqueeze(0), maps, out=None if out is None else out.sim)
        clutter_score = offset = None
        if clutter is not None:
            cl = torch.as_tensor(clutter, dtype=torch.float32, device=self.device).reshape(1, c, 1)
            clutter_score = torch.matmul(cl.reshape(1, 1, c), maps).squeeze(1)       # (B, P), one GEMV per image
            offset = clutter_score.clamp(min=0).mean(1) - clutter_score.mean(1)
            if out is not None:
                clutter_score = out.clutter_score.copy_(clutter_score)
                offset = out.clutter_offset.copy_(offset)
        return ImageBatch(maps, sim, clutter_score, offset)

    # ------------------------------------------------------------------ poses

    def screen(self, centers: torch.Tensor, thetas: torch.Tensor, shift: torch.Tensor | None = None, *,
               planar: bool = False) -> torch.Tensor:
        """(N, V, 3) screen vertices at N camera poses, or (3, N, V) planes with ``planar``:
        centres (N, 3), thetas (N,), and an optional principal-point shift (N, 2) in map
        pixels (x = column, y = row)."""
        return render.project_vertices(self.verts, centers, thetas, self.camera, planar=planar, shift=shift)

    def rasterize(self, centers: torch.Tensor, thetas: torch.Tensor,
                  shift: torch.Tensor | None = None) -> render.Fragments:
        """Rasterise the mesh at N camera poses (see :meth:`screen`)."""
        return render.rasterize(self.screen(centers, thetas, shift), self.faces, self.map_size,
                                perspective_correct=self.perspective_correct, cull_backfaces=self.face_orientation)

    def object_scores(self, fragments: render.Fragments, image_index: torch.Tensor, images: ImageBatch) -> torch.Tensor:
        """``s_o`` (N, P) of N rendered poses; ``image_index`` (N,) says which image of
        ``images`` each pose is compared against."""
        n, n_pix = fragments.pix_to_face.shape[0], self.num_pixels
        if self.method == "render":
            rendered = render.interpolate_vertex_features(fragments, self.faces, self.vertex_features)
            return (rendered.reshape(n, -1, n_pix) * images.maps.index_select(0, image_index)).sum(1)
        covered = torch.nonzero(fragments.pix_to_face.reshape(-1) >= 0).squeeze(1)
        problem = torch.div(covered, n_pix, rounding_mode="floor")
        pix = covered - problem * n_pix
        face = fragments.pix_to_face.reshape(-1).index_select(0, covered)
        bary = fragments.bary.reshape(-1, 3).index_select(0, covered).t()         # (3, M)
        values = self._covered_object_scores(images, image_index.index_select(0, problem), pix,
                                             self.faces.t().index_select(1, face), bary)
        return values.new_zeros(n * n_pix).index_put((covered,), values).reshape(n, n_pix)

    def _covered_object_scores(self, images: ImageBatch, image: torch.Tensor, pixel: torch.Tensor,
                               vertex, bary) -> torch.Tensor:
        """``s_o`` (M,) at M covered pixels: ``sum_k bary_k * S[image, v_k, pixel]``, one
        gather of 3 M numbers from the similarity table; image, pixel (M,), vertex and
        bary (3, M)."""
        n_verts, n_pix = self.verts.shape[0], self.num_pixels
        at = (image * (n_verts * n_pix) + pixel) + vertex * n_pix                # (3, M)
        gathered = images.sim.reshape(-1).index_select(0, at.reshape(-1)).reshape(3, -1)
        return (bary * gathered).sum(0)

    def fragment_losses(self, fragments: render.Fragments, image_index: torch.Tensor,
                        images: ImageBatch) -> torch.Tensor:
        """(N,) losses of rasterised poses (differentiable through the barycentrics)."""
        s_c = images.clutter_score.index_select(0, image_index) if images.clutter_score is not None else None
        return pose_loss(self.object_scores(fragments, image_index, images), s_c)

    def losses(self, images: ImageBatch, centers: torch.Tensor, thetas: torch.Tensor, image_index: torch.Tensor,
               shift: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) losses of N camera poses (centres (N, 3), thetas (N,)), pose i against image
        ``image_index[i]``; differentiable w.r.t. the pose.

        With ``method="similarity"`` only the covered pixels are visited
        (:func:`covered_pose_loss`), in plain PyTorch or in two Triton kernels
        (``backend``; checked against PyTorch on first use, see :meth:`_check_triton`);
        ``method="render"`` renders dense feature maps."""
        if self.method == "render":
            return self.fragment_losses(self.rasterize(centers, thetas, shift), image_index, images)
        if self.backend == "numba":
            return self._numba_losses(images, centers, thetas, image_index, shift)
        if self.backend == "triton" and self._kernel_mesh is None:
            self._check_triton(images, centers, thetas, image_index, shift)
        total = self._covered_totals(self.backend, images, self.screen(centers, thetas, shift, planar=True),
                                     image_index)
        offset = images.clutter_offset.index_select(0, image_index) if images.clutter_score is not None else None
        return covered_pose_loss(total, offset, self.num_pixels)

    def _covered_totals(self, backend: str, images: ImageBatch, planes: torch.Tensor,
                        image_index: torch.Tensor) -> torch.Tensor:
        """(N,) :func:`covered_sum` of the poses whose screen planes are ``planes``."""
        if backend == "triton":
            from . import score_triton
            return score_triton.covered_totals(planes, self._kernel_mesh, image_index, images.sim,
                                               images.clutter_score, *self.map_size)
        cov = render.rasterize_covered(planes, self.faces, self.map_size, perspective_correct=self.perspective_correct,
                                       cull_backfaces=self.face_orientation, planar=True, with_depth=False)
        image = image_index.index_select(0, cov.batch)                            # (M,)
        s_o = self._covered_object_scores(images, image, cov.pixel, cov.vertex, cov.bary)
        s_c = None
        if images.clutter_score is not None:
            s_c = images.clutter_score.reshape(-1).index_select(0, image * self.num_pixels + cov.pixel)
        return covered_sum(s_o, s_c, cov.batch, image_index.shape[0])

    def _check_triton(self, images: ImageBatch, centers, thetas, image_index, shift, n: int = 16) -> None:
        """Before the Triton kernels' first use: build their mesh tables and compare both
        variants of the loss kernel (with the gradient, and without: final losses,
        :meth:`losses_at`) with PyTorch on the first ``n`` poses: sums and gradients; on a
        failure (e.g. no compiler for this GPU) or a disagreement, warn and use PyTorch from
        then on."""
        from . import score_triton
        self._kernel_mesh = score_triton.KernelMesh.build(self.faces, self.face_orientation)
        pick = slice(0, min(n, centers.shape[0]))
        results = []
        with torch.enable_grad():
            for backend in ("triton", "torch"):
                c, t = (v[pick].detach().clone().requires_grad_(True) for v in (centers, thetas))
                s = None if shift is None else shift[pick].detach()
                try:
                    total = self._covered_totals(backend, images, self.screen(c, t, s, planar=True), image_index[pick])
                    results.append((total.detach(), *torch.autograd.grad(total.sum(), (c, t))))
                    if backend == "triton":       # the no-gradient variant: the same sums
                        with torch.no_grad():
                            plain = self._covered_totals(backend, images, self.screen(c, t, s, planar=True),
                                                         image_index[pick])
                        results[-1] = results[-1] + (plain,)
                except Exception as exc:      # the PyTorch path is the reference: its errors propagate
                    if backend == "torch":
                        raise
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    log.warning("the Triton pose loss failed on this device (%s); solving with the PyTorch backend",
                                first)
                    self.backend = "torch"
                    return
        (sum_a, gc_a, gt_a, plain_a), (sum_b, gc_b, gt_b) = results
        scale = max(float(gc_b.abs().max()), float(gt_b.abs().max()), 1e-6)
        err = max(float((sum_a - sum_b).abs().max()) / self.num_pixels,
                  float((plain_a - sum_b).abs().max()) / self.num_pixels,
                  float((gc_a - gc_b).abs().max()) / scale, float((gt_a - gt_b).abs().max()) / scale)
        if err > 1e-3:
            log.warning("the Triton pose loss disagrees with PyTorch's on this device (relative difference "
                        "%.2e); solving with the PyTorch backend", err)
            self.backend = "torch"
        else:
            log.debug("the Triton pose loss agrees with PyTorch's (largest difference %.2e)", err)

    def losses_at(self, images: ImageBatch, poses: torch.Tensor, image_index: torch.Tensor | None = None) -> torch.Tensor:
        """Losses of poses given as angles (no gradient), e.g. for loss landscapes.

        Args:
            poses: (N, 4) azimuth, elevation, theta (radians), render distance.
            image_index: (N,) which image each pose is compared with (default: image 0).
        Returns:
            (N,) losses on the CPU.
        """
        poses = torch.as_tensor(poses, dtype=torch.float32, device=self.device).reshape(-1, 4)
        if image_index is None:
            image_index = torch.zeros(poses.shape[0], dtype=torch.long, device=self.device)
        with torch.no_grad():
            centers = geometry.camera_center(poses[:, 0], poses[:, 1], poses[:, 3])
            return self.losses(images, centers, poses[:, 2], image_index).cpu()

    def grid_losses(self, images: ImageBatch, fragments: render.Fragments,
                    budget_bytes: int = 256 * 2 ** 20) -> torch.Tensor:
        """Loss of every image against every one of K pre-rasterised poses, (B, K), no gradient.

        All images at once (in chunks of ``budget_bytes``): the covered pixels of the K poses
        are gathered from every image's table; the uncovered ones contribute
        ``max(0, s_c)``, a per-image sum (:func:`covered_pose_loss`).
        """
        b, k, n_pix = len(images), fragments.pix_to_face.shape[0], self.num_pixels
        if self.backend == "numba":
            return self._numba_grid_losses(images, fragments)
        if self.method == "render":    # the explicit reference: one image at a time
            with torch.no_grad():
                return torch.stack([self.fragment_losses(fragments, torch.full((k,), i, device=self.device), images)
                                    for i in range(b)])
        with torch.no_grad():
            p2f = fragments.pix_to_face.reshape(-1)
            covered = torch.nonzero(p2f >= 0).squeeze(1)                          # (M,)
            pose_of = torch.div(covered, n_pix, rounding_mode="floor")
            pix = covered - pose_of * n_pix
            vidx = self.faces.index_select(0, p2f.index_select(0, covered))      # (M, 3)
            flat = (vidx * n_pix + pix.unsqueeze(1)).reshape(-1)                 # into (V * P)
            bary = fragments.bary.reshape(-1, 3).index_select(0, covered).t().contiguous()   # (3, M)
            per_chunk = max(1, budget_bytes // max(1, 4 * 4 * flat.numel()))
            out = []
            for start in range(0, b, per_chunk):
                sim = images.sim[start:start + per_chunk]
                n = sim.shape[0]
                g = sim.reshape(n, -1).index_select(1, flat).reshape(n, -1, 3)   # (n, M, 3)
                s_o = g[..., 0] * bary[0] + g[..., 1] * bary[1] + g[..., 2] * bary[2]   # (n, M)
                s_c = offset = None
                if images.clutter_score is not None:
                    s_c = images.clutter_score[start:start + n].index_select(1, pix)    # (n, M)
                    offset = images.clutter_offset[start:start + n].unsqueeze(1)        # (n, 1)
                out.append(covered_pose_loss(covered_sum(s_o, s_c, pose_of, k), offset, n_pix))
            return torch.cat(out)

    # ------------------------------------------------------------------ the Numba backend (CPU)
    # Everything the "numba" backend adds to the scorer is here; the kernels are in
    # nemopose.solve.score_numba.

    def _numba_losses(self, images: ImageBatch, centers: torch.Tensor, thetas: torch.Tensor,
                      image_index: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
        """:meth:`losses` by the Numba pose kernel: projection, z-buffer, covered sum and its
        gradient in one call. If the first call fails (e.g. neither a compiled cache nor a
        working compiler), warn and use PyTorch from then on."""
        from . import score_numba
        first = self._numba_camera is None
        if first:
            self._numba_camera = score_numba.Camera.build(self.verts, self.faces, self.face_orientation, self.camera)
        try:
            total = score_numba.pose_totals(self._numba_camera, centers, thetas, shift, image_index, images.sim,
                                            images.clutter_score)
        except Exception as exc:      # noqa: BLE001 - only the first call; PyTorch is the reference
            if not first:
                raise
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("the Numba pose loss failed (%s); solving with the PyTorch backend", line)
            self.backend = "torch"
            return self.losses(images, centers, thetas, image_index, shift)
        offset = images.clutter_offset.index_select(0, image_index) if images.clutter_score is not None else None
        return covered_pose_loss(total, offset, self.num_pixels)

    def _numba_grid_losses(self, images: ImageBatch, fragments: render.Fragments) -> torch.Tensor:
        """:meth:`grid_losses` by the Numba grid kernel: every image against every
        pre-rasterised pose, parallel over (image, pose), reading the tables in place. The
        poses' covered pixels are listed once per ``fragments`` object."""
        from . import score_numba
        if self._numba_grid is None or self._numba_grid[0] is not fragments:
            self._numba_grid = (fragments, score_numba.GridPixels.build(fragments.pix_to_face, fragments.bary,
                                                                        self.faces))
        total = score_numba.grid_totals(self._numba_grid[1], images.sim, images.clutter_score)   # (B, K)
        offset = images.clutter_offset.unsqueeze(1) if images.clutter_score is not None else None
        return covered_pose_loss(total, offset, self.num_pixels)
