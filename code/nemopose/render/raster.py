"""A differentiable hard rasteriser and feature renderer in plain PyTorch (METHOD.md §5).

Pieces, from low to high level:

- :func:`rasterize`: screen-space triangles -> per-pixel nearest face, barycentrics, depth
  (the semantics of PyTorch3D's hard rasteriser with ``faces_per_pixel=1, blur_radius=0``).
- :func:`interpolate_vertex_features`: barycentric interpolation of per-vertex features.
- the camera (:class:`~nemopose.render.camera.RenderCamera`, ``project_vertices``) lives in
  :mod:`nemopose.render.camera`.
- :class:`FeatureRenderer`: mesh + vertex features + camera poses -> (B, C, h, w) maps.

Pixel convention: pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)`` and is sampled at its
centre ``(c + 0.5, r + 0.5)``; x is the column, y the row.

How it is fast without a compiled kernel: the discrete stage, which face is nearest at
each pixel, runs without autograd in :mod:`nemopose.render.zbuffer` (faces visit only the pixels
of their screen box; one scatter-min of packed depth/face keys). The barycentrics of the
winning faces are then recomputed with autograd from the vertex positions, which gives
exactly the gradient PyTorch3D's backward provides (the choice of face is piecewise
constant; the barycentrics move with the vertices), through a hand-written backward
(:class:`_Barycentric`). :func:`rasterize_covered` returns only the covered pixels (what
the pose solver needs); ``planar=True`` takes the (3, B, V) coordinate planes that the
rasteriser works on. Back-face culling (``cull_backfaces``) halves the work for closed
convex meshes, such as NeMo's cuboids, without changing the images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from . import zbuffer
from .camera import RenderCamera, project_vertices

__all__ = [
    "Fragments", "CoveredPixels", "rasterize", "rasterize_covered", "rasterize_reference", "interpolate_vertex_features",
    "render_features", "FeatureRenderer",
]


@dataclass(frozen=True)
class Fragments:
    """Output of :func:`rasterize`.

    Attributes:
        pix_to_face: (B, H, W) long, index into ``faces`` of the nearest face, -1 where empty.
        bary: (B, H, W, 3) barycentric coordinates of the pixel centre in that face (zero
            where empty); differentiable w.r.t. the screen-space vertices.
        depth: (B, H, W) interpolated depth of that face (zero where empty); differentiable.
    """

    pix_to_face: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool, True where a face covers the pixel."""
        return self.pix_to_face >= 0


def _check_inputs(verts_screen: torch.Tensor, faces: torch.Tensor, image_size, planar: bool = False) -> tuple[int, int]:
    if planar and (verts_screen.dim() != 3 or verts_screen.shape[0] != 3):
        raise ValueError(f"rasterize: planar verts_screen must be (3, B, V), got {tuple(verts_screen.shape)}")
    if not planar and (verts_screen.dim() != 3 or verts_screen.shape[-1] != 3):
        raise ValueError(f"rasterize: verts_screen must be (B, V, 3), got {tuple(verts_screen.shape)}")
    n_verts = verts_screen.shape[2 if planar else 1]
    if faces.dim() != 2 or faces.shape[-1] != 3:
        raise ValueError(f"rasterize: faces must be (F, 3), got {tuple(faces.shape)}")
    if faces.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"rasterize: faces must be an integer tensor, got {faces.dtype}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= n_verts):
        raise ValueError(f"rasterize: face index out of range [0, {n_verts})")
    try:
        height, width = int(image_size[0]), int(image_size[1])
    except (TypeError, IndexError, ValueError) as exc:
        raise ValueError(f"rasterize: image_size must be (H, W), got {image_size!r}") from exc
    if height <= 0 or width <= 0:
        raise ValueError(f"rasterize: image_size must be positive, got {(height, width)}")
    return height, width


def _barycentric(x: torch.Tensor, y: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Screen-space barycentrics of points in triangles.

    Args:
        x, y: (N, 3) triangle vertex coordinates; px, py: (N,) sample points.
    Returns:
        (N, 3) barycentric coordinates (sum to 1; negative outside). Degenerate triangles
        give non-finite values.
    """
    x0, x1, x2 = x.unbind(1)
    y0, y1, y2 = y.unbind(1)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    w0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) / area
    w1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) / area
    w2 = ((x0 - px) * (y1 - py) - (x1 - px) * (y0 - py)) / area
    return torch.stack([w0, w1, w2], dim=-1)


def _perspective_correct(bary: torch.Tensor, z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Perspective-correct barycentrics from screen-space ones; z: the vertex depths, same
    shape, the three corners along ``dim``."""
    w = bary / z
    return w / w.sum(dim, keepdim=True)


class _Barycentric(torch.autograd.Function):
    """Screen-space barycentrics of pixel centres, with a hand-written backward.

    Inputs: x, y (V',) coordinate planes of the vertices; corner (3, M) long, the row of
    each triangle corner in them; px, py (M,) the pixel centres. Output (3, M): the
    corners as rows (contiguous planes: the CPU kernels are several times faster on those
    than on the strided columns of (M, 3)).

    Forward: the same numbers as :func:`_barycentric`. Backward: with the edge functions
    ``E_k = area * b_k`` (``E_0 = u_1 v_2 - u_2 v_1`` and rotations, ``u, v`` the corners
    relative to the pixel), ``dL/dE_k = (g_k - <g, b>) / area``, then
    ``dL/du = v x dL/dE`` and ``dL/dv = dL/dE x u``, scattered back onto the vertices with
    ``scatter_add_``: some twenty (M,) operations where autograd's graph of the forward has
    three times as many, and ``index_add_`` (its gradient of a gather) is several times
    slower.
    """

    @staticmethod
    def forward(ctx, x, y, corner, px, py):
        ctx.n_verts, flat = x.shape[0], corner.reshape(-1)
        x, y = x.index_select(0, flat).reshape(3, -1), y.index_select(0, flat).reshape(3, -1)   # (3, M)
        u, v = x - px, y - py                                                    # corners - pixel
        (x0, x1, x2), (y0, y1, y2) = x, y
        (u0, u1, u2), (v0, v1, v2) = u, v
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        bary = torch.empty_like(u)
        torch.div(u1 * v2 - u2 * v1, area, out=bary[0])
        torch.div(u2 * v0 - u0 * v2, area, out=bary[1])
        torch.div(u0 * v1 - u1 * v0, area, out=bary[2])
        ctx.save_for_backward(u, v, bary, area, flat)
        return bary

    @staticmethod
    def backward(ctx, grad):
        u, v, bary, area, flat = ctx.saved_tensors
        h = (grad - (grad * bary).sum(0)) / area                                 # (3, M) dL/dE_k
        (u0, u1, u2), (v0, v1, v2), (h0, h1, h2) = u, v, h
        grad_u, grad_v = torch.empty_like(u), torch.empty_like(v)
        torch.sub(v1 * h2, v2 * h1, out=grad_u[0])
        torch.sub(v2 * h0, v0 * h2, out=grad_u[1])
        torch.sub(v0 * h1, v1 * h0, out=grad_u[2])
        torch.sub(h1 * u2, h2 * u1, out=grad_v[0])
        torch.sub(h2 * u0, h0 * u2, out=grad_v[1])
        torch.sub(h0 * u1, h1 * u0, out=grad_v[2])
        grad_x = grad_u.new_zeros(ctx.n_verts).scatter_add_(0, flat, grad_u.reshape(-1))
        grad_y = grad_v.new_zeros(ctx.n_verts).scatter_add_(0, flat, grad_v.reshape(-1))
        return grad_x, grad_y, None, None, None


@dataclass(frozen=True)
class CoveredPixels:
    """The covered pixels of a rasterisation, as lists (output of :func:`rasterize_covered`).

    What the pose scorer needs: it never touches an empty pixel, so it skips the dense
    (B, H, W, 3) barycentric image and its gradient. Per-corner quantities are (3, M),
    the corners as rows: the CPU kernels are several times faster on contiguous rows than
    on the strided columns of (M, 3).

    Attributes:
        batch: (M,) long, the image of each covered pixel; ascending.
        pixel: (M,) long, its flat index ``row * W + col`` in that image.
        face: (M,) long, index into ``faces`` of the nearest face.
        vertex: (3, M) long, that face's vertices (``faces[face].t()``).
        bary: (3, M) barycentric coordinates there; differentiable.
        vertex_depth: (3, M) depths of the face's vertices; differentiable. None when not
            asked for (``with_depth=False``).
        shape: (B, H, W).
    """

    batch: torch.Tensor
    pixel: torch.Tensor
    face: torch.Tensor
    vertex: torch.Tensor
    bary: torch.Tensor
    vertex_depth: torch.Tensor | None
    shape: tuple[int, int, int]

    @property
    def depth(self) -> torch.Tensor:
        """(M,) interpolated depth."""
        return (self.bary * self.vertex_depth).sum(0)

    def to_fragments(self) -> Fragments:
        """The dense :class:`Fragments` (zero / -1 where empty)."""
        batch, height, width = self.shape
        n_pix = batch * height * width
        flat = self.batch * (height * width) + self.pixel
        p2f = torch.full((n_pix,), -1, dtype=torch.long, device=self.face.device).index_put_((flat,), self.face)
        bary = self.bary.new_zeros((n_pix, 3)).index_put((flat,), self.bary.t())
        depth = self.bary.new_zeros((n_pix,)).index_put((flat,), self.depth)
        return Fragments(pix_to_face=p2f.reshape(batch, height, width),
                         bary=bary.reshape(batch, height, width, 3), depth=depth.reshape(batch, height, width))


def rasterize_covered(verts_screen: torch.Tensor, faces: torch.Tensor, image_size,
                      *, perspective_correct: bool = False, near: float = 1e-6,
                      max_candidates: int = 50_000_000, cull_backfaces: torch.Tensor | None = None,
                      planar: bool = False, with_depth: bool = True) -> CoveredPixels:
    """:func:`rasterize` with its output as lists of covered pixels (same arguments).

    With ``planar``, ``verts_screen`` is (3, B, V): the column, row and depth planes, as
    :func:`project_vertices` gives with ``planar=True`` (the rasteriser works on planes;
    slicing them out of (B, V, 3) costs strided copies). ``with_depth=False`` skips the
    depths (``vertex_depth`` is None; the pose scorer does not need them).
    """
    height, width = _check_inputs(verts_screen, faces, image_size, planar)
    planes = verts_screen if planar else verts_screen.permute(2, 0, 1)           # (3, B, V)
    batch, n_verts = planes.shape[1:]
    faces = faces.long()
    if cull_backfaces is not None and tuple(cull_backfaces.shape) != (faces.shape[0],):
        raise ValueError(f"rasterize: cull_backfaces must be (F={faces.shape[0]},), got {tuple(cull_backfaces.shape)}")
    with torch.no_grad():
        covered, face = zbuffer.nearest_faces(planes.detach().transpose(1, 2).contiguous(), faces, height, width,
                                              perspective_correct=perspective_correct, near=near,
                                              max_candidates=max_candidates, cull_backfaces=cull_backfaces)
        b_idx = torch.div(covered, height * width, rounding_mode="floor")
        pixel = covered - b_idx * (height * width)
        row = torch.div(pixel, width, rounding_mode="floor")
        px, py = (pixel - row * width).to(planes.dtype) + 0.5, row.to(planes.dtype) + 0.5
        vertex = faces.t().contiguous().index_select(1, face)                    # (3, M)
        flat = (vertex + b_idx * n_verts).reshape(-1)                             # into B * V
    # Differentiable stage: barycentrics of the chosen face at each covered pixel. (Also run
    # when nothing is covered, so that the outputs stay connected to the graph.)
    x, y, z = (plane.reshape(-1) for plane in planes)                            # (B * V,) each
    bary = _Barycentric.apply(x, y, flat.reshape(3, -1), px, py)                 # (3, M)
    z = z.index_select(0, flat).reshape(3, -1) if with_depth or perspective_correct else None
    if perspective_correct:
        bary = _perspective_correct(bary, z, dim=0)
    return CoveredPixels(batch=b_idx, pixel=pixel, face=face, vertex=vertex, bary=bary,
                         vertex_depth=z if with_depth else None, shape=(batch, height, width))


def rasterize(verts_screen: torch.Tensor, faces: torch.Tensor, image_size,
              *, perspective_correct: bool = False, near: float = 1e-6,
              max_candidates: int = 50_000_000, cull_backfaces: torch.Tensor | None = None) -> Fragments:
    """Hard-rasterise a batch of triangle meshes that share their faces.

    Args:
        verts_screen: (B, V, 3) vertices in screen space: x = column and y = row in pixels,
            z = depth (> 0 in front of the camera).
        faces: (F, 3) long vertex indices, shared by the batch.
        image_size: (H, W) of the output.
        perspective_correct: interpolate with perspective-correct barycentrics instead of
            the screen-space (affine) ones NeMo's PyTorch3D set-up used.
        near: faces with any vertex at depth <= near are dropped (the near plane).
        max_candidates: guard against pathological inputs (a face covering a huge screen
            area); raise instead of allocating more (face, pixel) candidates than this.
        cull_backfaces: None (default), or for a closed convex mesh its (F,) outward
            orientation from :func:`nemopose.mesh.convex_face_orientation`: +1 where the
            winding normal ``(v1 - v0) x (v2 - v0)`` points out of the mesh, -1 where it
            points in (0: never culled). Faces seen from behind are then dropped before
            any pixel is visited, about half of the work. From outside a closed convex mesh
            a back face is always behind a front one, so the output is the same but for
            pixel centres exactly on the silhouette (a tie between a front and a back face
            at equal depth). Needs a screen space that keeps the world's handedness, as
            :func:`project_vertices` gives (x = column, y = row, z = depth); images with a
            vertex at or behind the near plane are not culled.
    Returns:
        :class:`Fragments` with pix_to_face (B, H, W), bary (B, H, W, 3), depth (B, H, W).
    """
    return rasterize_covered(verts_screen, faces, image_size, perspective_correct=perspective_correct,
                             near=near, max_candidates=max_candidates,
                             cull_backfaces=cull_backfaces).to_fragments()


def rasterize_reference(verts_screen: torch.Tensor, faces: torch.Tensor, image_size,
                        *, perspective_correct: bool = False, near: float = 1e-6) -> Fragments:
    """Slow, obviously-correct rasteriser for tests: every pixel against every face.

    Same contract as :func:`rasterize` (no autograd). Builds a faces x pixels table per
    image, so use it only on small inputs.
    """
    height, width = _check_inputs(verts_screen, faces, image_size)
    faces = faces.long()
    batch = verts_screen.shape[0]
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    px = (cols.reshape(-1).to(verts_screen.dtype) + 0.5)
    py = (rows.reshape(-1).to(verts_screen.dtype) + 0.5)
    p2f = torch.full((batch, height * width), -1, dtype=torch.long)
    bary_out = torch.zeros((batch, height * width, 3), dtype=verts_screen.dtype)
    depth_out = torch.zeros((batch, height * width), dtype=verts_screen.dtype)
    for b in range(batch):
        best = torch.full((height * width,), math.inf, dtype=verts_screen.dtype)
        for f in range(faces.shape[0]):
            tri = verts_screen[b, faces[f]].detach()
            if tri[:, 2].min() <= near:
                continue
            bc = _barycentric(tri[:, 0].expand(px.shape[0], 3), tri[:, 1].expand(px.shape[0], 3), px, py)
            if not torch.isfinite(bc).all():
                continue
            inside = (bc >= 0).all(-1)
            if perspective_correct:
                bc = _perspective_correct(bc, tri[:, 2].expand(px.shape[0], 3))
            z = (bc * tri[:, 2]).sum(-1)
            better = inside & (z > near) & (z < best)   # strict: the lower face index wins ties
            best = torch.where(better, z, best)
            p2f[b, better] = f
            bary_out[b, better] = bc[better]
            depth_out[b, better] = z[better]
    return Fragments(p2f.reshape(batch, height, width), bary_out.reshape(batch, height, width, 3),
                     depth_out.reshape(batch, height, width))


def interpolate_vertex_features(fragments: Fragments, faces: torch.Tensor,
                                vertex_features: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation of per-vertex features: ``sum_i b_i * feat[v_i]``.

    Args:
        fragments: from :func:`rasterize` for B images.
        faces: (F, 3) the faces that were rasterised.
        vertex_features: (V, C), shared by the batch, or (B, V, C).
    Returns:
        (B, C, H, W) maps, zero where no face covers the pixel. The result is stored
        channels-last (``torch.channels_last``): the interpolation writes whole feature
        vectors per pixel; elementwise work against a channels-last target is fastest.
    """
    p2f = fragments.pix_to_face
    batch, height, width = p2f.shape
    flat = p2f.reshape(-1)
    # Every pixel is a bag of three (vertex, weight) pairs; empty pixels get vertex 0 with
    # weight 0. One embedding_bag call then writes the dense output directly (no zero fill
    # and scatter), and its backward w.r.t. the weights (the barycentrics) never
    # materialises the (P, 3, C) gathered features.
    vidx = faces.long().index_select(0, flat.clamp(min=0))                        # (P, 3)
    bary = fragments.bary.reshape(-1, 3)                                           # (P, 3), 0 where empty
    if vertex_features.dim() == 3 and vertex_features.shape[0] == batch:
        n_verts = vertex_features.shape[1]
        offsets = torch.arange(batch, device=vidx.device).repeat_interleave(height * width) * n_verts
        vidx = vidx + offsets.unsqueeze(1)
        table = vertex_features.reshape(batch * n_verts, -1)
    elif vertex_features.dim() == 2:
        table = vertex_features
    else:
        raise ValueError(f"vertex_features must be (V, C) or (B={batch}, V, C), got {tuple(vertex_features.shape)}")
    out = torch.nn.functional.embedding_bag(vidx, table, per_sample_weights=bary.to(table.dtype),
                                            mode="sum")                            # (P, C)
    return out.reshape(batch, height, width, -1).permute(0, 3, 1, 2)


def render_features(verts: torch.Tensor, faces: torch.Tensor, vertex_features: torch.Tensor,
                    center: torch.Tensor, theta: torch.Tensor, camera: RenderCamera,
                    *, perspective_correct: bool = False) -> torch.Tensor:
    """Render per-vertex features at a batch of camera poses.

    Args:
        verts: (V, 3) CAD-frame vertices; faces: (F, 3); vertex_features: (V, C).
        center: (B, 3) camera centres; theta: (B,).
        camera: the render camera.
    Returns:
        (B, C, h, w) maps; differentiable w.r.t. ``center``, ``theta`` (and the features).
    """
    screen = project_vertices(verts, center, theta, camera)
    fragments = rasterize(screen, faces, camera.image_size, perspective_correct=perspective_correct)
    return interpolate_vertex_features(fragments, faces, vertex_features.to(screen.dtype))


class FeatureRenderer(nn.Module):
    """Neural mesh renderer: a mesh with a feature vector per vertex, rendered at camera poses.

    Args:
        verts: (V, 3) CAD-frame vertices; faces: (F, 3).
        vertex_features: (V, C).
        camera: :class:`RenderCamera`.
        perspective_correct: see :func:`rasterize`.
    """

    def __init__(self, verts: torch.Tensor, faces: torch.Tensor, vertex_features: torch.Tensor,
                 camera: RenderCamera, perspective_correct: bool = False) -> None:
        super().__init__()
        verts = torch.as_tensor(verts, dtype=torch.float32)
        faces = torch.as_tensor(faces, dtype=torch.long)
        vertex_features = torch.as_tensor(vertex_features, dtype=torch.float32)
        if verts.dim() != 2 or verts.shape[1] != 3:
            raise ValueError(f"verts must be (V, 3), got {tuple(verts.shape)}")
        if vertex_features.dim() != 2 or vertex_features.shape[0] != verts.shape[0]:
            raise ValueError(f"vertex_features must be (V={verts.shape[0]}, C), got {tuple(vertex_features.shape)}")
        self.register_buffer("verts", verts)
        self.register_buffer("faces", faces)
        self.register_buffer("vertex_features", vertex_features)
        self.camera = camera
        self.perspective_correct = perspective_correct

    def screen_vertices(self, center: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return project_vertices(self.verts, center, theta, self.camera)

    def rasterize(self, center: torch.Tensor, theta: torch.Tensor) -> Fragments:
        return rasterize(self.screen_vertices(center, theta), self.faces, self.camera.image_size,
                         perspective_correct=self.perspective_correct)

    def forward(self, center: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """(B, 3) centres and (B,) thetas -> (B, C, h, w) feature maps."""
        fragments = self.rasterize(center, theta)
        return interpolate_vertex_features(fragments, self.faces, self.vertex_features.to(center.dtype))
