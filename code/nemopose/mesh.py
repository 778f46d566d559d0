"""Meshes: OFF files and NeMo's cuboid meshes (METHOD.md §4)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import NemoPoseError
from .utils import atomic_write_text


class MeshFormatError(NemoPoseError, ValueError):
    """A mesh file that cannot be parsed."""


def load_off(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a triangle mesh in OFF format.

    Args:
        path: file with a line ``OFF``, a line ``nV nF nE``, nV lines ``x y z`` and nF
            lines ``3 i j k`` (0-based). ``OFF`` may share its line with the counts.
    Returns:
        vertices (nV, 3) float32 and faces (nF, 3) int64.
    Raises:
        MeshFormatError naming the file and the problem.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise MeshFormatError(f"{path}: cannot read OFF file ({exc})") from exc
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].startswith("OFF"):
        raise MeshFormatError(f"{path}: not an OFF file (first line must be 'OFF')")
    header = lines[0][3:].split()
    body = lines[1:]
    if not header:
        if not body:
            raise MeshFormatError(f"{path}: missing the 'nV nF nE' line")
        header, body = body[0].split(), body[1:]
    try:
        n_verts, n_faces = int(header[0]), int(header[1])
    except (ValueError, IndexError) as exc:
        raise MeshFormatError(f"{path}: bad counts line {' '.join(header)!r}") from exc
    if n_verts < 0 or n_faces < 0 or len(body) < n_verts + n_faces:
        raise MeshFormatError(
            f"{path}: header announces {n_verts} vertices and {n_faces} faces but the file "
            f"has only {len(body)} data lines")
    try:
        verts = np.array([[float(t) for t in ln.split()[:3]] for ln in body[:n_verts]], dtype=np.float64)
        if verts.size and verts.shape[1] != 3:
            raise ValueError("a vertex line has fewer than 3 coordinates")
    except ValueError as exc:
        raise MeshFormatError(f"{path}: bad vertex line ({exc})") from exc
    faces = []
    for k, ln in enumerate(body[n_verts:n_verts + n_faces]):
        parts = ln.split()
        try:
            count = int(parts[0])
            idx = [int(t) for t in parts[1:1 + count]]
        except (ValueError, IndexError) as exc:
            raise MeshFormatError(f"{path}: bad face line {k}: {ln!r}") from exc
        if count != 3 or len(idx) != 3:
            raise MeshFormatError(f"{path}: face {k} is not a triangle: {ln!r}")
        faces.append(idx)
    faces_arr = np.array(faces, dtype=np.int64).reshape(-1, 3)
    if faces_arr.size and (faces_arr.min() < 0 or faces_arr.max() >= n_verts):
        raise MeshFormatError(f"{path}: face index out of range [0, {n_verts})")
    if not np.all(np.isfinite(verts)):
        raise MeshFormatError(f"{path}: non-finite vertex coordinate")
    return verts.reshape(-1, 3).astype(np.float32), faces_arr


def off_string(verts: np.ndarray, faces: np.ndarray) -> str:
    """OFF text with 16 decimals per coordinate, as the original writes it."""
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    lines = ["OFF", f"{len(verts)} {len(faces)} 0"]
    lines += [f"{v[0]:.16f} {v[1]:.16f} {v[2]:.16f}" for v in verts]
    lines += [f"3 {f[0]} {f[1]} {f[2]}" for f in faces]
    return "\n".join(lines) + "\n"


def save_off(path: str | os.PathLike, verts: np.ndarray, faces: np.ndarray) -> None:
    """Write a triangle mesh as OFF (atomically)."""
    verts = np.asarray(verts)
    faces = np.asarray(faces)
    if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"{path}: expected verts (V, 3) and faces (F, 3), got {verts.shape} and {faces.shape}")
    atomic_write_text(path, off_string(verts, faces))


def cuboid_extent(vertices: np.ndarray, coverage: float = 0.99) -> list[tuple[float, float]]:
    """Per-axis extent of a cuboid that covers ``coverage`` of the vertices.

    For each axis, sort the coordinates and take the shortest interval that contains
    ``k = int(coverage * n)`` consecutive sorted values: ``(v[i], v[i + k])`` with
    ``i = argmin(v[i + k] - v[i])``.

    Args:
        vertices: (N, 3).
    Returns:
        [(x0, x1), (y0, y1), (z0, z1)].
    """
    vertices = np.asarray(vertices)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) < 2:
        raise ValueError(f"cuboid_extent: expected (N >= 2, 3) vertices, got {vertices.shape}")
    k = int(vertices.shape[0] * coverage)
    if k < 1:
        raise ValueError(f"cuboid_extent: coverage {coverage} of {len(vertices)} vertices is empty")
    extent = []
    for axis in range(3):
        v = np.sort(vertices[:, axis])
        if k >= len(v):
            extent.append((v[0], v[-1]))
            continue
        i = int(np.argmin(v[k:] - v[:-k]))
        extent.append((v[i], v[i + k]))
    return extent


def _grid_faces(n_fast: int, n_slow: int, base: int) -> np.ndarray:
    """Two triangles per grid cell, in the original's order (row-major over (slow, fast))."""
    m, n = np.meshgrid(np.arange(n_slow - 1), np.arange(n_fast - 1), indexing="ij")
    m, n = m.ravel(), n.ravel()
    a = base + m * n_fast + n
    tri1 = np.stack([a, a + 1, a + n_fast], axis=1)
    tri2 = np.stack([a + n_fast + 1, a + 1, a + n_fast], axis=1)
    return np.stack([tri1, tri2], axis=1).reshape(-1, 3)


def cuboid_mesh(x_range, y_range, z_range, n_vertices: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """NeMo's cuboid surface mesh (the ``meshelize`` of the original cuboid tool).

    Each of the six faces is its own regular grid (edge vertices are duplicated between
    faces), in the order z=min, z=max, y=min, y=max, x=min, x=max, with the grid spacing
    chosen so the whole surface holds about ``n_vertices`` vertices.

    Args:
        x_range, y_range, z_range: (min, max) per axis.
    Returns:
        verts (V, 3) float64 and faces (F, 3) int64.
    """
    (x0, x1), (y0, y1), (z0, z1) = x_range, y_range, z_range
    w, h, d = x1 - x0, y1 - y0, z1 - z0
    if min(w, h, d) <= 0:
        raise ValueError(f"cuboid_mesh: empty extent {(x_range, y_range, z_range)}")
    total_area = (w * h + h * d + w * d) * 2
    # On average a vertex touches 6 edges and a triangle has 3, hence 2 triangles per vertex.
    edge = (total_area / (n_vertices * 2) * 2) ** 0.5
    xs = x0 + np.linspace(0, w, int(w / edge + 1))
    ys = y0 + np.linspace(0, h, int(h / edge + 1))
    zs = z0 + np.linspace(0, d, int(d / edge + 1))

    def grid(fast, slow, fixed_axis, fixed_value, fast_axis, slow_axis):
        s, f = np.meshgrid(slow, fast, indexing="ij")
        out = np.empty((f.size, 3))
        out[:, fast_axis] = f.ravel()
        out[:, slow_axis] = s.ravel()
        out[:, fixed_axis] = fixed_value
        return out

    faces_spec = [  # (fast samples, slow samples, fixed axis, fixed value, fast axis, slow axis)
        (xs, ys, 2, zs[0], 0, 1), (xs, ys, 2, zs[-1], 0, 1),
        (xs, zs, 1, ys[0], 0, 2), (xs, zs, 1, ys[-1], 0, 2),
        (ys, zs, 0, xs[0], 1, 2), (ys, zs, 0, xs[-1], 1, 2),
    ]
    verts, faces, base = [], [], 0
    for fast, slow, fixed_axis, fixed_value, fast_axis, slow_axis in faces_spec:
        verts.append(grid(fast, slow, fixed_axis, fixed_value, fast_axis, slow_axis))
        faces.append(_grid_faces(len(fast), len(slow), base))
        base += len(fast) * len(slow)
    return np.concatenate(verts), np.concatenate(faces).astype(np.int64)


def cuboid_from_cad(vertex_sets: list[np.ndarray], coverage: float = 0.99,
                    n_vertices: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Cuboid mesh covering the pooled vertices of one or more CAD models."""
    pooled = np.concatenate([np.asarray(v, dtype=np.float64) for v in vertex_sets], axis=0)
    return cuboid_mesh(*cuboid_extent(pooled, coverage), n_vertices=n_vertices)


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals, (V, 3); zero for isolated vertices."""
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    tri = verts[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros_like(verts)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, norm, out=np.zeros_like(normals), where=norm > 0)


def convex_face_orientation(verts: np.ndarray, faces: np.ndarray, tol: float = 1e-6) -> np.ndarray | None:
    """Outward orientation of the faces of a closed convex mesh, or None for any other mesh.

    NeMo's cuboids are closed and convex, but their triangle winding is not consistently
    outward, so the orientation is derived from the geometry: each face's winding normal
    ``(v1 - v0) x (v2 - v0)`` is compared with the direction from the vertex mean (inside
    a convex mesh) to the face. The rasteriser uses it to cull back faces
    (:func:`nemopose.render.rasterize`), which is exact only for closed convex meshes, so
    both properties are checked here:

    - closed: after merging vertices at the same position (the cuboids repeat the vertices
      of their edges on both sides), every edge belongs to exactly two faces;
    - convex: no vertex lies outside the plane of any face (by more than ``tol`` times the
      size of the mesh).

    Args:
        verts: (V, 3); faces: (F, 3).
    Returns:
        (F,) float32 with +1 where the winding normal points out of the mesh, -1 where it
        points in, 0 for a degenerate (zero-area) face; None when the mesh is not closed
        and convex.
    """
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if faces.size == 0 or verts.size == 0:
        return None
    scale = float(np.ptp(verts, axis=0).max()) or 1.0
    # closed: weld coincident vertices, then count the faces of each undirected edge
    _, weld = np.unique(np.round(verts / (tol * scale)), axis=0, return_inverse=True)
    welded = weld.reshape(-1)[faces]                                             # (F, 3)
    edges = np.sort(np.concatenate([welded[:, [0, 1]], welded[:, [1, 2]], welded[:, [2, 0]]]), axis=1)
    _, per_edge = np.unique(edges, axis=0, return_counts=True)
    if (edges[:, 0] == edges[:, 1]).any() or not (per_edge == 2).all():
        return None
    # convex: every vertex on the inner side of every face's plane
    tri = verts[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])              # (F, 3)
    length = np.linalg.norm(normal, axis=1)
    sign = np.sign(np.einsum("fi,fi->f", normal, tri.mean(1) - verts.mean(0)))
    sign[length <= (tol * scale) ** 2] = 0
    unit = normal * (sign / np.maximum(length, np.finfo(np.float64).tiny))[:, None]   # outward, (F, 3)
    height = unit @ verts.T - np.einsum("fi,fi->f", unit, tri[:, 0])[:, None]    # (F, V) above each plane
    if (sign[length > (tol * scale) ** 2] == 0).any() or height.max() > tol * scale:
        return None
    return sign.astype(np.float32)
