"""3D annotations: mesh vertices in the crop, their visibility and weights (METHOD.md §6.3).

For every prepared image and the mesh it uses (single: mesh 01; multi: its CAD index):

1. Project every mesh vertex into the original image with the PASCAL3D+ camera
   (:func:`nemopose.geometry.project_points`) and truncate to integer pixels (the original
   casts with ``astype(int32)``; the "round" of METHOD.md §6.3 is this truncation).
2. Visibility (:func:`zbuffer_visibility`): z-buffer the mesh's triangles over the
   original image, the depth being the vertex's camera distance normalised to [0, 1] over
   the mesh and interpolated as the plane through each triangle's corners; a vertex is
   visible when the buffer at its (clamped) pixel holds its own distance to within 1e-3,
   and its unclamped pixel lies inside the object's original bbox. Only the buffer at the
   vertex pixels is needed, so only those pixels are evaluated (vectorised in torch). By
   default the pixels a triangle covers are the original's (its quirks included), which
   makes the result identical to the original's per-triangle loop
   (:func:`zbuffer_visibility_reference`, kept for tests and the benchmark); the
   rasteriser's pixel-centre rule is an option, and :func:`zbuffer_visibility_raster`
   computes it by rasterising the whole image with :func:`nemopose.render.rasterize`.
3. Map the vertex pixels into the crop with the box-to-box map of 6.1
   (:func:`nemopose.data.crop.map_to_crop`) and clamp them into the crop.
4. ``kp_weights = |cos|`` between a per-vertex direction and the direction to the camera
   (:func:`vertex_weights`); see ``WEIGHT_MODES`` for the faithful and corrected variants.

Occluded sets reuse the unoccluded val 3D annotations (same pose, same crop): they are
hard-linked (copied where links are impossible), as the original's ``link_annotations``.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import geometry, mesh
from .. import render
from ..render.zbuffer import ragged
from . import annotation, layout
from .crop import map_to_crop

log = logging.getLogger(__name__)

VISIBILITY_TOLERANCE = 1e-3  # on distances normalised to [0, 1] over the mesh (original: eps)
WEIGHT_MODES = ("original", "normal")
ZBUFFERS = ("points", "rasterize", "reference")
# Added to the normalised distances before rasterising: the rasteriser drops faces with a
# vertex at depth <= its near plane, and the nearest vertex has normalised distance 0.
_DEPTH_OFFSET = 1.0


# ----------------------------------------------------------------------------- projection


def vertex_pixels(verts: np.ndarray, anno: dict[str, Any]) -> np.ndarray:
    """Integer pixels (row, col) of CAD-frame vertices in the original image.

    Args:
        verts: (V, 3); anno: an annotation with azimuth, elevation, theta (radians),
            distance, focal, principal (px, py), viewport.
    Returns:
        (V, 2) int64 (row, col), truncated towards zero as the original's ``astype(int32)``.
    """
    xy = geometry.project_points(np.asarray(verts, dtype=np.float64), float(anno["azimuth"]),
                                 float(anno["elevation"]), float(anno["theta"]), float(anno["distance"]),
                                 float(anno["focal"]), np.asarray(anno["principal"], dtype=np.float64),
                                 float(anno["viewport"]))
    return np.trunc(xy[:, ::-1]).astype(np.int64)


def camera_position(anno: dict[str, Any]) -> np.ndarray:
    """(3,) camera centre in the CAD frame (distance 0 -> 0.1, the original's quirk)."""
    distance = geometry.original_zero_distance(torch.tensor(float(anno["distance"]), dtype=torch.float64))
    return geometry.camera_center(float(anno["azimuth"]), float(anno["elevation"]), float(distance))


def normalised_distances(verts: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """(V,) camera-to-vertex distances rescaled to [0, 1] over the mesh."""
    dist = np.linalg.norm(np.asarray(verts, dtype=np.float64) - camera[None], axis=1)
    span = dist.max() - dist.min()
    return (dist - dist.min()) / span if span > 0 else np.zeros_like(dist)


# ----------------------------------------------------------------------------- visibility


def _triangle_area(p: np.ndarray) -> np.ndarray:
    """Unsigned area of triangles p (..., 3, 2)."""
    return np.abs(p[..., 0, 0] * (p[..., 1, 1] - p[..., 2, 1]) + p[..., 1, 0] * (p[..., 2, 1] - p[..., 0, 1])
                  + p[..., 2, 0] * (p[..., 0, 1] - p[..., 1, 1])) / 2


def original_skipped_triangles(pixels_rc: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Quirk of the original z-buffer: a triangle whose integer bounding box spans fewer
    than 3 pixel steps (``(r1 - r0) * (c1 - c0) < 3``) or whose area is below 1e-2 pixels
    is not drawn. (F,) bool, True = skipped."""
    tri = pixels_rc[faces].astype(np.float64)                     # (F, 3, 2)
    span = tri.max(1) - tri.min(1)
    return (span[:, 0] * span[:, 1] < 3) | (_triangle_area(tri) < 1e-2)


COVERAGES = ("original", "centre")


def original_coverage(w: torch.Tensor) -> torch.Tensor:
    """Quirk of the original z-buffer's inclusion test: a pixel belongs to a triangle when
    ``|A - (A1 + A2 + A3)| < 3`` (areas in pixels; A1..A3 the triangles it makes with the
    edges), i.e. pixels up to ``3 / edge length`` outside an edge count too.

    Args:
        w: (N, 3) edge functions (twice the signed sub-triangle areas).
    Returns:
        (N,) bool.
    """
    return (w.abs().sum(1) - w.sum(1).abs()) < 2 * 3


def zbuffer_at_pixels(pixels_rc: np.ndarray, depth: np.ndarray, faces: np.ndarray,
                      coverage: str = "original", cell: int | None = None) -> np.ndarray:
    """The z-buffer of the mesh's triangles read at the vertices' own pixels.

    Equivalent to z-buffering the whole image and reading it at the vertex pixels, but
    only those pixels are evaluated: vertex pixels are bucketed into ``cell`` x ``cell``
    tiles (default: the median triangle size, so a triangle overlaps a few tiles holding a
    few vertices each at any image scale), each triangle visits the vertices in the tiles
    its bounding box overlaps, and the nearest covering depth per vertex is kept by a
    scatter-min. Edge functions are exact (vertices and samples are integer pixels); the
    depth is the plane through the triangle's three (row, col, depth) vertices.

    Args:
        pixels_rc: (V, 2) int (row, col), already clamped into the image.
        depth: (V,) per-vertex values interpolated affinely over each triangle.
        faces: (F, 3) the triangles to draw.
        coverage: ``original``: the original loop's pixels, i.e. its integer bounding box
            ``[r0, r1) x [c0, c1)`` (the last row and column are never written, a quirk)
            and :func:`original_coverage`; ``centre``: pixels inside or on the triangle
            (the rasteriser's pixel-centre rule; :func:`zbuffer_visibility_raster`).
    Returns:
        (V,) float64 buffer value at each vertex pixel; 0 where no triangle covers it.
    """
    if coverage not in COVERAGES:
        raise ValueError(f"coverage must be one of {COVERAGES}, got {coverage!r}")
    pix = torch.from_numpy(np.asarray(pixels_rc, dtype=np.int64))
    faces_t = torch.from_numpy(np.asarray(faces, dtype=np.int64))
    n_verts = len(pix)
    out = torch.full((n_verts,), math.inf, dtype=torch.float64)
    if len(faces_t) and n_verts:
        tri = pix.index_select(0, faces_t.reshape(-1)).reshape(-1, 3, 2)                 # (F, 3, 2)
        lo, hi = tri.amin(1), tri.amax(1)                                                # (F, 2)
        if cell is None:
            cell = max(2, int((hi - lo).amax(1).double().median()) + 1)
        # Bucket the vertex pixels into tiles.
        n_tile_rows, n_tile_cols = int(pix[:, 0].max()) // cell + 1, int(pix[:, 1].max()) // cell + 1
        tile = (pix[:, 0] // cell) * n_tile_cols + pix[:, 1] // cell                   # (V,)
        order = torch.argsort(tile)
        per_tile = torch.bincount(tile, minlength=n_tile_rows * n_tile_cols)
        tile_start = torch.cumsum(per_tile, 0) - per_tile
        # (triangle, tile) pairs for every tile a triangle's bounding box overlaps.
        # (Triangle corners are vertex pixels, so every tile index is in range.)
        tlo = lo // cell
        span = hi // cell - tlo + 1                                                      # (F, 2) tiles
        face_of, k = ragged(span[:, 0] * span[:, 1])
        tile_r = tlo[face_of, 0] + torch.div(k, span[face_of, 1], rounding_mode="floor")
        tile_c = tlo[face_of, 1] + k % span[face_of, 1]
        tile_id = tile_r * n_tile_cols + tile_c
        # (triangle, vertex) candidates: every vertex in those tiles, kept when in the box.
        pair, k = ragged(per_tile.index_select(0, tile_id))
        f_idx = face_of.index_select(0, pair)
        v_idx = order.index_select(0, tile_start.index_select(0, tile_id.index_select(0, pair)) + k)
        q = pix.index_select(0, v_idx)
        f_lo, f_hi = lo.index_select(0, f_idx), hi.index_select(0, f_idx)
        in_box = (q >= f_lo) & ((q < f_hi) if coverage == "original" else (q <= f_hi))
        keep = in_box.all(1)
        f_idx, v_idx = f_idx[keep], v_idx[keep]
        # Edge functions w_i = (p_j - q) x (p_k - q), i.e. twice the signed sub-areas.
        d = (tri.index_select(0, f_idx) - pix.index_select(0, v_idx)[:, None, :]).double()  # (N, 3, 2)
        j, k3 = [1, 2, 0], [2, 0, 1]
        w = d[:, j, 0] * d[:, k3, 1] - d[:, k3, 0] * d[:, j, 1]                           # (N, 3)
        area2 = w.sum(1)
        if coverage == "original":
            inside = (area2 != 0) & original_coverage(w)
        else:
            inside = (area2 != 0) & ((w >= 0).all(1) | (w <= 0).all(1))
        z = torch.from_numpy(np.asarray(depth, dtype=np.float64))
        values = (w * z[faces_t.index_select(0, f_idx)]).sum(1) / area2                 # plane through the corners
        values = torch.where(inside, values, torch.full_like(values, math.inf))
        out.scatter_reduce_(0, v_idx, values, reduce="amin")
    return torch.where(torch.isfinite(out), out, torch.zeros_like(out)).numpy()


def zbuffer_visibility(pixels_rc: np.ndarray, depth: np.ndarray, faces: np.ndarray, image_hw: tuple[int, int],
                       tolerance: float = VISIBILITY_TOLERANCE, coverage: str = "original") -> np.ndarray:
    """Front-most test of every vertex at its own pixel (the fast default).

    Pixels are clamped into the image first (vertices outside it land on the border, as
    in the original); triangles the original does not draw are dropped
    (:func:`original_skipped_triangles`); the buffer is read at each vertex's pixel with
    :func:`zbuffer_at_pixels` (0 where nothing covers it, as the original); the vertex is
    visible when the buffer holds its own normalised distance to within ``tolerance``.
    With ``coverage="original"`` this is exactly the original loop
    (:func:`zbuffer_visibility_reference`); ``"centre"`` equals rasterising the image
    (:func:`zbuffer_visibility_raster`).

    Args:
        pixels_rc: (V, 2) int (row, col) vertex pixels in the original image.
        depth: (V,) normalised distances in [0, 1].
        faces: (F, 3) triangles.
        image_hw: (H, W) of the original image.
    Returns:
        (V,) bool.
    """
    height, width = int(image_hw[0]), int(image_hw[1])
    pix = np.clip(pixels_rc, 0, [height - 1, width - 1])
    faces = np.asarray(faces, dtype=np.int64)
    drawn = faces[~original_skipped_triangles(pix, faces)]
    return np.abs(depth - zbuffer_at_pixels(pix, depth, drawn, coverage)) < tolerance


def zbuffer_visibility_raster(pixels_rc: np.ndarray, depth: np.ndarray, faces: np.ndarray,
                              image_hw: tuple[int, int], tolerance: float = VISIBILITY_TOLERANCE) -> np.ndarray:
    """:func:`zbuffer_visibility` with ``coverage="centre"``, by rasterising the whole
    original image with :func:`render.rasterize` (METHOD.md §5); several times slower. Same
    contract.

    The rasteriser samples pixel (r, c) at its centre, so vertex (r, c) is placed at
    (c + 0.5, r + 0.5): the samples are then exactly the integer vertex positions, and its
    screen-space (affine) depth interpolation is the original's per-triangle plane fit.
    """
    height, width = int(image_hw[0]), int(image_hw[1])
    pix = np.clip(pixels_rc, 0, [height - 1, width - 1])
    faces = np.asarray(faces, dtype=np.int64)
    drawn = faces[~original_skipped_triangles(pix, faces)]
    screen = torch.from_numpy(np.stack([pix[:, 1] + 0.5, pix[:, 0] + 0.5, depth + _DEPTH_OFFSET], axis=1))
    buffer = torch.zeros(len(pix), dtype=torch.float64)
    if len(drawn):
        with torch.no_grad():
            frags = render.rasterize(screen[None], torch.from_numpy(drawn), (height, width))
        rows, cols = torch.from_numpy(pix[:, 0]), torch.from_numpy(pix[:, 1])
        covered = frags.pix_to_face[0, rows, cols] >= 0
        buffer = torch.where(covered, frags.depth[0, rows, cols] - _DEPTH_OFFSET, buffer)
    return np.abs(depth - buffer.numpy()) < tolerance


def zbuffer_visibility_reference(pixels_rc: np.ndarray, depth: np.ndarray, faces: np.ndarray,
                                 image_hw: tuple[int, int], tolerance: float = VISIBILITY_TOLERANCE) -> np.ndarray:
    """The original's per-triangle Python z-buffer (``cal_occ_one_image``), for tests and
    benchmarks. Same contract as :func:`zbuffer_visibility`.

    Per triangle: its integer bounding box ``[r0, r1) x [c0, c1)`` (end-exclusive, so the
    last row and column are never written), inclusion by the area test
    ``|A - (A1 + A2 + A3)| < 3``, depth by the plane through its three (row, col, depth)
    vertices, kept where smaller than the (float32) buffer; pixels never written read 0.
    """
    height, width = int(image_hw[0]), int(image_hw[1])
    inf = 1e10
    buffer = np.full((height, width), inf, dtype=np.float32)
    pix = np.clip(pixels_rc, 0, [height - 1, width - 1]).astype(np.float64)
    skipped = original_skipped_triangles(pix.astype(np.int64), np.asarray(faces))
    for tri, skip in zip(np.asarray(faces), skipped):
        if skip:
            continue
        p = pix[tri]
        r0, c0 = p.min(0).astype(int)
        r1, c1 = p.max(0).astype(int)
        rows, cols = np.meshgrid(np.arange(r0, r1, dtype=np.float64), np.arange(c0, c1, dtype=np.float64),
                                 indexing="ij")
        pos = np.stack([rows, cols], axis=-1)                                         # (h, w, 2)
        full = _triangle_area(p)
        parts = sum(_triangle_area(np.stack([np.broadcast_to(p[i], pos.shape), np.broadcast_to(p[j], pos.shape),
                                             pos], axis=-2)) for i, j in ((0, 1), (1, 2), (0, 2)))
        inside = np.abs(full - parts) < 3
        plane = np.linalg.solve(np.concatenate([p, np.ones((3, 1))], axis=1), depth[tri])  # d = a r + b c + k
        values = np.where(inside, pos @ plane[:2] + plane[2], inf)
        block = buffer[r0:r1, c0:c1]
        buffer[r0:r1, c0:c1] = np.minimum(block, values)
    buffer[buffer > inf * 0.9] = 0
    at = buffer[pix[:, 0].astype(int), pix[:, 1].astype(int)]
    return np.abs(depth - at) < tolerance


def inside_box(pixels_rc: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(V,) bool: ``y0 <= row < y1`` and ``x0 <= col < x1`` for a ``[y0, y1, x0, x1, ...]`` box."""
    y0, y1, x0, x1 = np.asarray(box[:4]).astype(np.int32)
    return (y0 <= pixels_rc[:, 0]) & (pixels_rc[:, 0] < y1) & (x0 <= pixels_rc[:, 1]) & (pixels_rc[:, 1] < x1)


# ----------------------------------------------------------------------------- weights


def _neighbours(n_verts: int, faces: np.ndarray) -> list[np.ndarray]:
    """Sorted neighbour indices of every vertex (vertices sharing a face with it)."""
    faces = np.asarray(faces, dtype=np.int64)
    pairs = np.concatenate([faces[:, [a, b]] for a in range(3) for b in range(3) if a != b])
    pairs = np.unique(pairs, axis=0)
    split = np.searchsorted(pairs[:, 0], np.arange(n_verts + 1))
    return [pairs[split[v]:split[v + 1], 1] for v in range(n_verts)]


def sphere_fit_directions(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """The original's per-vertex "surface direction" (``direction_calculator``).

    For each vertex, every triple of its neighbours defines with the vertex a sphere
    (circumsphere of 4 points); the sphere whose surface best fits all neighbours (lowest
    ``sum exp(| |p - centre| - radius |)``) wins and the direction is the unit vector from
    the vertex to its centre. Triples whose 4 points are coplanar (``det == 0``) are
    skipped with score 100 and centre (0, 0, 0); a vertex with at most 2 neighbours gets
    (1, 0, 0).

    Quirk worth knowing: on NeMo's cuboids every vertex's neighbours lie in its own face
    plane (face grids do not share vertices), so every triple is coplanar and the
    direction degenerates to the unit vector from the vertex towards the CAD origin
    (and (1, 0, 0) at two corners of each face grid). Kept as the default weighting
    (``weights="original"``); ``"normal"`` uses true outward normals.

    Args:
        verts: (V, 3); faces: (F, 3).
    Returns:
        (V, 3) float64 unit directions.
    """
    verts = np.asarray(verts, dtype=np.float64)
    out = np.tile(np.array([1.0, 0.0, 0.0]), (len(verts), 1))
    nbrs = _neighbours(len(verts), faces)
    counts = np.array([len(n) for n in nbrs])
    for k in np.unique(counts[counts >= 3]):
        idx = np.nonzero(counts == k)[0]                                           # (G,)
        nb = np.stack([nbrs[v] for v in idx])                                        # (G, k)
        combos = np.array(list(itertools.combinations(range(k), 3)))                 # (M, 3)
        target = verts[idx]                                                          # (G, 3)
        pts = verts[nb]                                                              # (G, k, 3)
        tri = pts[:, combos]                                                         # (G, M, 3, 3)
        a = target[:, None, None, :] - tri                                           # (G, M, 3, 3)
        y = (target ** 2).sum(-1)[:, None, None] - (tri ** 2).sum(-1)                # (G, M, 3)
        valid = np.linalg.det(a) != 0
        centres = np.zeros(a.shape[:2] + (3,))
        scores = np.full(a.shape[:2], 100.0)
        if valid.any():
            c = 0.5 * np.linalg.solve(a[valid], y[valid][..., None])[..., 0]          # (N, 3)
            radius = np.linalg.norm(c - tri[valid][:, 0], axis=-1)
            g = np.nonzero(valid)[0]
            fit = np.abs(np.linalg.norm(pts[g] - c[:, None], axis=-1) - radius[:, None])
            with np.errstate(over="ignore"):
                scores[valid] = np.exp(fit).sum(-1)
            centres[valid] = c
        best = centres[np.arange(len(idx)), np.argmin(scores, axis=1)]             # (G, 3)
        vec = best - target
        with np.errstate(invalid="ignore", divide="ignore"):
            out[idx] = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    return out


def outward_directions(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Outward unit surface normals per vertex, independent of the triangle winding.

    Each face normal is flipped to point away from the centre of the mesh's bounding box
    (right for convex meshes such as the cuboids, whose winding is not consistently
    outward), then area-weighted normals are averaged per vertex.

    Returns:
        (V, 3) float64 unit vectors (zero for vertices on no face).
    """
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    tri = verts[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])                 # (F, 3), |n| = 2 area
    centre = (verts.min(0) + verts.max(0)) / 2
    flip = np.einsum("fi,fi->f", normal, tri.mean(1) - centre) < 0
    normal[flip] *= -1
    acc = np.zeros_like(verts)
    for k in range(3):
        np.add.at(acc, faces[:, k], normal)
    norm = np.linalg.norm(acc, axis=1, keepdims=True)
    return np.divide(acc, norm, out=np.zeros_like(acc), where=norm > 0)


def vertex_directions(verts: np.ndarray, faces: np.ndarray, mode: str = "original") -> np.ndarray:
    """Per-vertex directions for the weights: ``original`` (:func:`sphere_fit_directions`)
    or ``normal`` (:func:`outward_directions`). (V, 3)."""
    if mode == "original":
        return sphere_fit_directions(verts, faces)
    if mode == "normal":
        return outward_directions(verts, faces)
    raise ValueError(f"weight mode must be one of {WEIGHT_MODES}, got {mode!r}")


def original_weight_camera(camera: np.ndarray) -> np.ndarray:
    """Quirk of the original's ``cal_point_weight``: its ``get_camera_position`` returns
    ``pinv(R) @ (-R C) = -C``, so the weights use the direction from the vertex towards
    ``-C`` (the camera mirrored through the origin). Kept for ``weights="original"``."""
    return -np.asarray(camera)


def vertex_weights(directions: np.ndarray, verts: np.ndarray, camera: np.ndarray,
                   mode: str = "original") -> np.ndarray:
    """``kp_weights = |cos|`` between each vertex direction and its direction to the camera.

    Args:
        directions: (V, 3) from :func:`vertex_directions` (same ``mode``).
        verts: (V, 3); camera: (3,) camera centre C.
        mode: ``original`` (camera at ``-C``, :func:`original_weight_camera`) or ``normal``.
    Returns:
        (V,) float64 in [0, 1].
    """
    if mode not in WEIGHT_MODES:
        raise ValueError(f"weight mode must be one of {WEIGHT_MODES}, got {mode!r}")
    cam = original_weight_camera(camera) if mode == "original" else np.asarray(camera)
    vec = cam[None] - np.asarray(verts, dtype=np.float64)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    return np.abs((vec * directions).sum(1))


# ----------------------------------------------------------------------------- per image


@dataclass(frozen=True)
class Annotate3DConfig:
    """Settings of the 3D annotation step (defaults = the original's behaviour).

    Attributes:
        weights: ``original`` (sphere-fit directions, camera at -C) or ``normal``
            (outward normals, true camera direction).
        zbuffer: ``points`` (fast, :func:`zbuffer_visibility`), ``rasterize`` (the whole
            image through ``render.rasterize``; implies centre coverage) or ``reference``
            (the original's loop; slow).
        coverage: pixels a triangle covers in the ``points`` z-buffer: ``original``
            (identical to the original loop) or ``centre`` (the rasteriser's rule).
        tolerance: visibility tolerance on normalised distances.
    """

    weights: str = "original"
    zbuffer: str = "points"
    coverage: str = "original"
    tolerance: float = VISIBILITY_TOLERANCE

    def __post_init__(self) -> None:
        if self.weights not in WEIGHT_MODES:
            raise ValueError(f"weights must be one of {WEIGHT_MODES}, got {self.weights!r}")
        if self.zbuffer not in ZBUFFERS:
            raise ValueError(f"zbuffer must be one of {ZBUFFERS}, got {self.zbuffer!r}")
        if self.coverage not in COVERAGES:
            raise ValueError(f"coverage must be one of {COVERAGES}, got {self.coverage!r}")


@dataclass(frozen=True)
class MeshForAnnotation:
    """A mesh with its precomputed weight directions."""

    verts: np.ndarray       # (V, 3) float64
    faces: np.ndarray       # (F, 3) int64
    directions: np.ndarray  # (V, 3)

    @classmethod
    def load(cls, path: str | os.PathLike, weights: str = "original") -> "MeshForAnnotation":
        verts, faces = mesh.load_off(path)
        verts = verts.astype(np.float64)
        return cls(verts, faces, vertex_directions(verts, faces, weights))


def annotate_vertices(anno: dict[str, Any], target: MeshForAnnotation,
                      config: Annotate3DConfig = Annotate3DConfig()) -> dict[str, np.ndarray]:
    """Vertex pixels in the crop, visibility and weights of one prepared image.

    Args:
        anno: a 2D annotation (METHOD.md §13 keys: pose, ``height``, ``width``, ``box_ori``,
            ``box_obj``).
        target: the mesh.
    Returns:
        ``cropped_kp_list`` (V, 2) float64 (row, col) in the crop, clamped into it;
        ``visible`` (V,) bool; ``kp_weights`` (V,) float64.
    """
    pixels = vertex_pixels(target.verts, anno)
    camera = camera_position(anno)
    depth = normalised_distances(target.verts, camera)
    image_hw = (int(anno["height"]), int(anno["width"]))
    if config.zbuffer == "points":
        visible = zbuffer_visibility(pixels, depth, target.faces, image_hw, config.tolerance, config.coverage)
    else:
        zbuffer = zbuffer_visibility_raster if config.zbuffer == "rasterize" else zbuffer_visibility_reference
        visible = zbuffer(pixels, depth, target.faces, image_hw, config.tolerance)
    visible &= inside_box(pixels, anno["box_ori"])
    box_obj = np.asarray(anno["box_obj"]).astype(np.int32)
    crop = map_to_crop(pixels, anno["box_ori"], anno["box_obj"])
    crop = np.clip(crop, 0, np.array([box_obj[4], box_obj[5]]) - 1)
    weights = vertex_weights(target.directions, target.verts, camera, config.weights)
    return {"cropped_kp_list": crop, "visible": visible, "kp_weights": weights}


def annotation_3d(anno: dict[str, Any], mesh_index: int, target: MeshForAnnotation,
                  config: Annotate3DConfig = Annotate3DConfig()) -> dict[str, Any]:
    """The 3D annotation of a prepared image (:func:`nemopose.data.annotation.annotation_3d`)."""
    v = annotate_vertices(anno, target, config)
    return annotation.annotation_3d(anno, mesh_index, v["cropped_kp_list"], v["visible"], v["kp_weights"])


# ----------------------------------------------------------------------------- lists and links


def write_lists3d(lay: layout.SplitLayout, mesh_d: str) -> dict[str, int]:
    """lists3D for one category folder: the names of ``lists/<cat>/*.txt`` that have both
    a prepared image and a 3D annotation. single: their union as ``mesh01.txt`` (sorted);
    multi: one filtered list per list file (``meshNN.txt`` per CAD model and the subtype
    lists, as the original). Returns {list file name: count}."""
    have = {p.stem for p in lay.annotations3d(mesh_d).glob("*.npz")} & {p.stem for p in lay.images.glob("*.JPEG")}
    counts: dict[str, int] = {}
    union: set[str] = set()
    for list_path in sorted(lay.lists.glob("*.txt")):
        names = [n for n in layout.read_list(list_path) if n in have]
        union.update(names)
        if mesh_d != "single":
            layout.write_list(lay.lists3d(mesh_d) / list_path.name, names)
            counts[list_path.name] = len(names)
    if mesh_d == "single":
        layout.write_list(lay.mesh_list_path(mesh_d, 1), sorted(union))
        counts["mesh01.txt"] = len(union)
    return counts


def link_file(source: Path, target: Path, overwrite: bool = False) -> bool:
    """Hard-link ``source`` to ``target`` (copy where links are impossible). Returns False
    when ``target`` exists and is kept."""
    if target.exists():
        if not overwrite:
            return False
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return True


def azimuth_bin_filter(mask: str) -> Callable[[float], bool]:
    """Unseen-pose filter of the original tool: keep an azimuth strictly inside one of the
    selected equal bins of [0, 2 pi), e.g. ``TFFTTFFT`` (45-degree bins).

    (The strict inequalities drop an azimuth exactly on a bin edge: the original's
    behaviour, kept.)
    """
    if not mask or set(mask) - {"T", "F"}:
        raise ValueError(f"azimuth bin mask must be made of T and F, e.g. TFFTTFFT; got {mask!r}")
    size = 2 * np.pi / len(mask)
    selected = [i for i, c in enumerate(mask) if c == "T"]
    return lambda azimuth: any(size * i < azimuth < size * (i + 1) for i in selected)
