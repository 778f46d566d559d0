"""A differentiable hard rasteriser and feature renderer in plain PyTorch (SPEC section 5).

Pieces, from low to high level:

- :func:`rasterize`: screen-space triangles -> per-pixel nearest face, barycentrics, depth
  (the semantics of PyTorch3D's hard rasteriser with ``faces_per_pixel=1, blur_radius=0``).
- :func:`interpolate_vertex_features`: barycentric interpolation of per-vertex features.
- :class:`RenderCamera` and :func:`project_vertices`: the pose solver's pinhole camera
  (field of view 12 degrees over a square of side ``S``), built on :mod:`nemopose.geometry`.
- :class:`FeatureRenderer`: mesh + vertex features + camera poses -> (B, C, h, w) maps.

Pixel convention: pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)`` and is sampled at its
centre ``(c + 0.5, r + 0.5)``; x is the column, y the row.

How it is fast without a compiled kernel: each face only visits the pixels inside its
screen bounding box. All (face, pixel) candidates of the whole batch are enumerated at
once with ``repeat_interleave``, tested with edge functions, and the nearest face per pixel
is kept with two ``scatter_reduce`` passes (minimum depth, then the lowest face index among
equal depths, so ties are deterministic). This discrete stage runs without autograd. The
barycentrics of the winning faces are then recomputed with autograd from the vertex
positions, which gives exactly the gradient PyTorch3D's backward provides (the choice of
face is piecewise constant; the barycentrics move with the vertices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from . import geometry

__all__ = [
    "Fragments", "rasterize", "rasterize_reference", "interpolate_vertex_features",
    "RenderCamera", "project_vertices", "render_features", "FeatureRenderer",
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


def _check_inputs(verts_screen: torch.Tensor, faces: torch.Tensor, image_size) -> tuple[int, int]:
    if verts_screen.dim() != 3 or verts_screen.shape[-1] != 3:
        raise ValueError(f"rasterize: verts_screen must be (B, V, 3), got {tuple(verts_screen.shape)}")
    if faces.dim() != 2 or faces.shape[-1] != 3:
        raise ValueError(f"rasterize: faces must be (F, 3), got {tuple(faces.shape)}")
    if faces.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"rasterize: faces must be an integer tensor, got {faces.dtype}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= verts_screen.shape[1]):
        raise ValueError(f"rasterize: face index out of range [0, {verts_screen.shape[1]})")
    try:
        height, width = int(image_size[0]), int(image_size[1])
    except (TypeError, IndexError, ValueError) as exc:
        raise ValueError(f"rasterize: image_size must be (H, W), got {image_size!r}") from exc
    if height <= 0 or width <= 0:
        raise ValueError(f"rasterize: image_size must be positive, got {(height, width)}")
    return height, width


def _barycentric(tri: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Screen-space barycentrics of points in triangles.

    Args:
        tri: (N, 3, 3) triangle vertices (x, y, z); px, py: (N,) sample points.
    Returns:
        (N, 3) barycentric coordinates (sum to 1; negative outside). Degenerate triangles
        give non-finite values.
    """
    x0, y0 = tri[:, 0, 0], tri[:, 0, 1]
    x1, y1 = tri[:, 1, 0], tri[:, 1, 1]
    x2, y2 = tri[:, 2, 0], tri[:, 2, 1]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    w0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) / area
    w1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) / area
    w2 = ((x0 - px) * (y1 - py) - (x1 - px) * (y0 - py)) / area
    return torch.stack([w0, w1, w2], dim=-1)


def _perspective_correct(bary: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Perspective-correct barycentrics from screen-space ones; z: (N, 3) vertex depths."""
    w = bary / z
    return w / w.sum(-1, keepdim=True)


def _nearest_faces(verts: torch.Tensor, faces: torch.Tensor, height: int, width: int, *,
                   perspective_correct: bool, near: float, max_candidates: int) -> torch.Tensor:
    """Discrete stage of :func:`rasterize` (no autograd): the nearest face at every pixel.

    Each face gets four affine functions of the pixel position, expressed relative to the
    corner of its bounding box so that the constants stay small (precise in float32): its
    three barycentrics and its depth (or inverse depth when perspective-correct, since
    ``1/z`` is affine in screen space). Candidates (face, pixel in its box) are enumerated
    for the whole batch at once; each costs one gather of 12 coefficients and three
    multiply-adds.

    Returns:
        (B * H * W,) long face indices, -1 where empty.
    """
    batch, n_faces = verts.shape[0], faces.shape[0]
    device = verts.device
    n_pix = batch * height * width
    tri = verts.index_select(1, faces.reshape(-1)).reshape(batch, n_faces, 3, 3)   # (B, F, 3, 3)
    xs, ys, zs = tri[..., 0], tri[..., 1], tri[..., 2]                           # (B, F, 3)
    c0 = torch.ceil(xs.amin(-1) - 0.5).clamp(min=0)
    c1 = torch.floor(xs.amax(-1) - 0.5).clamp(max=width - 1)
    r0 = torch.ceil(ys.amin(-1) - 0.5).clamp(min=0)
    r1 = torch.floor(ys.amax(-1) - 0.5).clamp(max=height - 1)
    # Vertex positions relative to the centre of the box's first pixel.
    dx = xs - (c0 + 0.5).unsqueeze(-1)
    dy = ys - (r0 + 0.5).unsqueeze(-1)
    x0, x1, x2 = dx.unbind(-1)
    y0, y1, y2 = dy.unbind(-1)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    valid = (zs.amin(-1) > near) & (c1 >= c0) & (r1 >= r0) & (area != 0) & torch.isfinite(area)
    inv_area = torch.where(valid, 1.0 / area, torch.zeros_like(area))
    # w_k(p) = A_k * px + B_k * py + C_k with p relative to the box corner; from the edge
    # function w0 = ((x1 - px)(y2 - py) - (x2 - px)(y1 - py)) / area and its rotations.
    a_coef = torch.stack([y1 - y2, y2 - y0, y0 - y1], -1) * inv_area.unsqueeze(-1)
    b_coef = torch.stack([x2 - x1, x0 - x2, x1 - x0], -1) * inv_area.unsqueeze(-1)
    c_coef = torch.stack([x1 * y2 - x2 * y1, x2 * y0 - x0 * y2, x0 * y1 - x1 * y0], -1) * inv_area.unsqueeze(-1)
    zval = 1.0 / zs if perspective_correct else zs                               # affine in screen space
    coef = torch.cat([a_coef, (a_coef * zval).sum(-1, keepdim=True),
                      b_coef, (b_coef * zval).sum(-1, keepdim=True),
                      c_coef, (c_coef * zval).sum(-1, keepdim=True)], -1).reshape(-1, 12)

    n_cols = torch.where(valid, c1 - c0 + 1, torch.zeros_like(c0)).long().reshape(-1)
    n_rows = torch.where(valid, r1 - r0 + 1, torch.zeros_like(r0)).long().reshape(-1)
    counts = n_cols * n_rows                                                     # (B*F,)
    total = int(counts.sum())
    pix_to_face = torch.full((n_pix,), -1, dtype=torch.long, device=device)
    if total == 0:
        return pix_to_face
    if total > max_candidates:
        raise ValueError(f"rasterize: {total} (face, pixel) candidates exceed max_candidates="
                         f"{max_candidates}; are faces very close to the camera?")
    # Keep only the faces that have candidates, so per-candidate gathers index a small table.
    # (index_select is used throughout: it is several times faster than advanced indexing.)
    live = torch.nonzero(counts).squeeze(1)
    counts = counts.index_select(0, live)
    n_cols = n_cols.index_select(0, live)
    coef = coef.index_select(0, live)
    b_idx = torch.div(live, n_faces, rounding_mode="floor")
    base = ((b_idx * height + r0.reshape(-1).index_select(0, live).long()) * width
            + c0.reshape(-1).index_select(0, live).long())
    face_id = live - b_idx * n_faces

    owner = torch.repeat_interleave(torch.arange(live.numel(), device=device), counts)   # (N,)
    offset = torch.arange(total, device=device) - (torch.cumsum(counts, 0) - counts).index_select(0, owner)
    nc = n_cols.index_select(0, owner)
    dr = torch.div(offset, nc, rounding_mode="floor")
    dc = offset - dr * nc
    k = coef.index_select(0, owner)                                               # (N, 12)
    w = (k[:, 0:4] * dc.unsqueeze(1).to(k.dtype) + k[:, 4:8] * dr.unsqueeze(1).to(k.dtype)
         + k[:, 8:12])                                                            # (N, 4)
    z = 1.0 / w[:, 3] if perspective_correct else w[:, 3]
    keep = (w[:, :3] >= 0).all(1) & (z > near)
    keep_idx = torch.nonzero(keep).squeeze(1)
    owner = owner.index_select(0, keep_idx)
    z = z.index_select(0, keep_idx)
    pix = base.index_select(0, owner) + dr.index_select(0, keep_idx) * width + dc.index_select(0, keep_idx)
    zbuf = torch.full((n_pix,), math.inf, dtype=z.dtype, device=device)
    zbuf.scatter_reduce_(0, pix, z, reduce="amin")
    nearest = torch.nonzero(z == zbuf.index_select(0, pix)).squeeze(1)
    winner = torch.full((n_pix,), n_faces, dtype=torch.long, device=device)
    winner.scatter_reduce_(0, pix.index_select(0, nearest),
                           face_id.index_select(0, owner.index_select(0, nearest)), reduce="amin")
    return torch.where(winner < n_faces, winner, pix_to_face)


def rasterize(verts_screen: torch.Tensor, faces: torch.Tensor, image_size,
              *, perspective_correct: bool = False, near: float = 1e-6,
              max_candidates: int = 50_000_000) -> Fragments:
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
    Returns:
        :class:`Fragments` with pix_to_face (B, H, W), bary (B, H, W, 3), depth (B, H, W).
    """
    height, width = _check_inputs(verts_screen, faces, image_size)
    batch, n_verts = verts_screen.shape[:2]
    faces = faces.long()
    n_pix = batch * height * width

    with torch.no_grad():
        pix_to_face = _nearest_faces(verts_screen.detach(), faces, height, width,
                                     perspective_correct=perspective_correct, near=near,
                                     max_candidates=max_candidates)

    # Differentiable stage: barycentrics and depth of the chosen face at each covered pixel.
    # (Also run when nothing is covered, so that the outputs stay connected to the graph.)
    covered = torch.nonzero(pix_to_face >= 0).squeeze(1)
    b_idx = torch.div(covered, height * width, rounding_mode="floor")
    rem = covered - b_idx * height * width
    row = torch.div(rem, width, rounding_mode="floor")
    col = rem - row * width
    face_verts = faces.index_select(0, pix_to_face.index_select(0, covered)) + (b_idx * n_verts).unsqueeze(1)
    tri = verts_screen.reshape(-1, 3).index_select(0, face_verts.reshape(-1)).reshape(-1, 3, 3)  # (N, 3, 3)
    bary = _barycentric(tri, col.to(tri.dtype) + 0.5, row.to(tri.dtype) + 0.5)
    if perspective_correct:
        bary = _perspective_correct(bary, tri[..., 2])
    bary_out = verts_screen.new_zeros((n_pix, 3)).index_put((covered,), bary)
    depth_out = verts_screen.new_zeros((n_pix,)).index_put((covered,), (bary * tri[..., 2]).sum(-1))
    return Fragments(pix_to_face=pix_to_face.reshape(batch, height, width),
                     bary=bary_out.reshape(batch, height, width, 3),
                     depth=depth_out.reshape(batch, height, width))


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
            bc = _barycentric(tri.expand(px.shape[0], 3, 3), px, py)
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


# ----------------------------------------------------------------------------- camera


@dataclass(frozen=True)
class RenderCamera:
    """The pose solver's camera (SPEC 3, "Rendering camera").

    A pinhole with field of view ``fov_degrees`` over a square render of side
    ``render_size`` (S), principal point at the centre of that square, then centre-cropped
    to ``image_size``. Rendering directly at ``image_size`` with the principal point at
    its centre gives the same map, which is what we do.

    Attributes:
        image_size: (h, w) of the output map.
        render_size: S; defaults to ``max(h, w)``.
        fov_degrees: 12 in NeMo.
    """

    image_size: tuple[int, int]
    render_size: int | None = None
    fov_degrees: float = 12.0

    @property
    def side(self) -> int:
        return int(self.render_size or max(self.image_size))

    @property
    def focal(self) -> float:
        """Focal length in pixels, ``(S / 2) / tan(fov / 2)``."""
        return geometry.render_focal_length(self.side, self.fov_degrees)

    @property
    def principal(self) -> tuple[float, float]:
        """(x, y) principal point in the output map: its centre."""
        h, w = self.image_size
        return (w / 2.0, h / 2.0)


def project_vertices(verts: torch.Tensor, center: torch.Tensor, theta: torch.Tensor,
                     camera: RenderCamera) -> torch.Tensor:
    """Project CAD-frame vertices for a batch of camera poses.

    Args:
        verts: (V, 3) or (B, V, 3) world (CAD frame, z up) vertices.
        center: (B, 3) camera centres; theta: (B,) in-plane rotations.
    Returns:
        (B, V, 3) screen vertices (column, row, depth) for :func:`rasterize`.
    """
    if center.dim() != 2 or center.shape[-1] != 3:
        raise ValueError(f"center must be (B, 3), got {tuple(center.shape)}")
    theta = theta.reshape(-1).to(center)
    if theta.shape[0] != center.shape[0]:
        raise ValueError(f"theta must be (B,) with B={center.shape[0]}, got {tuple(theta.shape)}")
    principal = torch.tensor(camera.principal, dtype=center.dtype, device=center.device)
    return geometry.project_to_screen(verts.to(center), center, theta, camera.focal,
                                      principal.expand(center.shape[0], 2))


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
