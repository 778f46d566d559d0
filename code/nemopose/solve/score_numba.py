"""The pose loss of :class:`nemopose.solve.score.PoseScorer` as compiled CPU kernels (Numba).

On the CPU the plain-PyTorch step (:func:`nemopose.render.rasterize_covered` plus the
gathers of :meth:`PoseScorer.losses`) is some tens of tensor operations, each a pass over
(face, pixel) candidate lists in memory. The work itself is small: about a thousand front
faces and a thousand-odd covered pixels per pose, a few tens of flops each. Here one
optimiser step is one kernel call over all poses (images x starts); each pose is done start
to end by one thread, in its cache:

1. the projection of the vertices (:func:`nemopose.geometry.project_to_screen_planes`'s
   float32 operations, in its order);
2. the z-buffer: the same face table as :mod:`nemopose.render.zbuffer` (faces seen from
   behind culled by the same rule, box clipped to the map, affine barycentrics and depth
   relative to the box's first pixel, the same float32 operations in the same order), then
   every pixel of the box: inside test and depth test (the nearest face, ties to the lowest
   index: faces are visited in order and only a strictly nearer one wins). The same faces
   as PyTorch's rasteriser, pixel for pixel;
3. every covered pixel: its barycentrics (the formula of
   :class:`nemopose.render.raster._Barycentric`), ``s_o`` read from the image's similarity
   table in place (three numbers), ``max(s_o, s_c) - max(0, s_c)`` summed over the pose's
   pixels in pixel order in float32 (as PyTorch's ``scatter_add_``: the same losses, bit for
   bit), and, when asked, the gradient of that sum with respect to the screen ``x, y`` of
   the face's vertices (the hand-written backward of ``_Barycentric``), in float64;
4. that gradient carried back through the projection to the camera: rotation, centre and
   principal point (:func:`_chain`). PyTorch's autograd takes it on to the pose through
   :func:`nemopose.geometry.camera_rotation`, a few (N, 3, 3) operations.

One thread owns a pose, so no atomics are needed. Poses are split into chunks that a few
Python threads (as many as ``torch.get_num_threads()``) run at once, the kernels releasing
the GIL (:func:`_in_parallel`), rather than by Numba's ``parallel=True``. Measured on the
2 shared cores: the parallel version doubled the compile time (about 11 s more), its OpenMP
threading layer next to PyTorch's own OpenMP runtime made a step some hundred times slower
(10 ms against 0.1 ms for one pose), and waking its thread pool for one pose cost 1 ms.

:func:`grid_totals` does the same sums for every image against the 144 pre-rasterised
initial poses (no z-buffer, no gradient), parallel over (image, pose).

The kernels are compiled on first use (about 12 s on 2 busy cores) and cached on disk
next to this module (``cache=True``; ``NUMBA_CACHE_DIR`` moves the cache), so later
processes load them in under a second. :func:`pose_totals` returns the per-pose sum as an autograd function, as
:mod:`nemopose.solve.score_triton` does; the scorer turns it into the loss.
Screen-space barycentrics only (``perspective_correct=False``, NeMo's setting);
``method="similarity"`` only. Without the numba package the scorer uses PyTorch.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .. import geometry

try:
    import numba
except ImportError:          # pragma: no cover - exercised where numba is missing
    numba = None

__all__ = ["unavailable_reason", "KernelMesh", "Camera", "nearest_faces", "pose_totals", "GridPixels", "grid_totals"]


def unavailable_reason(device: torch.device) -> str | None:
    """Why the Numba kernels cannot run on ``device`` (None when they can)."""
    if numba is None:
        return "the numba package is not installed"
    if device.type != "cpu":
        return f"the Numba kernels run on the CPU, got {device}"
    return None


@dataclass(frozen=True)
class KernelMesh:
    """A mesh's faces as the kernels read them, built once per mesh (:meth:`build`).

    Attributes:
        faces: (F, 3) int32 numpy array.
        orientation: (F,) float32 outward orientation for back-face culling (zeros when
            not culling: nothing is culled).
        cull: whether to cull faces seen from behind.
    """

    faces: np.ndarray
    orientation: np.ndarray
    cull: bool

    @classmethod
    def build(cls, faces: torch.Tensor, cull_backfaces: torch.Tensor | None = None) -> "KernelMesh":
        """From (F, 3) faces and, to cull back faces, their (F,) outward orientation
        (:func:`nemopose.mesh.convex_face_orientation`)."""
        faces = np.ascontiguousarray(faces.detach().cpu().numpy(), dtype=np.int32)
        if cull_backfaces is None:
            return cls(faces, np.zeros(faces.shape[0], np.float32), False)
        orientation = np.ascontiguousarray(cull_backfaces.detach().cpu().numpy(), dtype=np.float32)
        return cls(faces, orientation, True)


_POOL: tuple[int, ThreadPoolExecutor] | None = None     # (process id, pool): a forked child makes its own
_POOL_LOCK = threading.Lock()


def _in_parallel(kernel, n_jobs: int, *args) -> None:
    """``kernel(lo, hi, *args)`` over jobs ``[0, n_jobs)``, split into chunks run by as many
    threads as PyTorch uses (``torch.set_num_threads``). The kernels release the GIL
    (``nogil``), so the threads run them at the same time; one job, or one thread, runs in
    the calling thread. A few chunks per thread: on shared cores a thread that loses its core
    for a while leaves its chunks to the others."""
    threads = max(1, torch.get_num_threads())
    if threads == 1 or n_jobs <= 1:
        kernel(0, n_jobs, *args)
        return
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid() or _POOL[1]._max_workers != threads:
            if _POOL is not None and _POOL[0] == os.getpid():
                _POOL[1].shutdown(wait=False)
            _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=threads, thread_name_prefix="nemopose-numba"))
        pool = _POOL[1]
    bounds = np.linspace(0, n_jobs, min(n_jobs, 4 * threads) + 1).astype(np.int64)
    for future in [pool.submit(kernel, lo, hi, *args) for lo, hi in zip(bounds[:-1], bounds[1:])]:
        future.result()


def _array(t: torch.Tensor, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """A CPU tensor as a numpy array sharing its memory (a copy only when it must)."""
    return t.detach().to(dtype).contiguous().numpy()


if numba is not None:

    @numba.njit(cache=True, nogil=True)
    def _zbuffer(x, y, z, faces, orient, cull, near, height, width, depth, nearest):
        """Nearest face at every pixel centre of one pose: ``nearest`` (P,) int32 (-1 where
        empty), ``depth`` (P,) float32 scratch. x, y, z: (V,) float32 screen planes.
        Every float32 operation is PyTorch's (``zbuffer._face_table`` and
        ``zbuffer.nearest_faces``), in the same order, so both choose the same faces."""
        half = np.float32(0.5)
        zero = np.float32(0.0)
        one = np.float32(1.0)
        last_col = np.float32(width - 1)
        last_row = np.float32(height - 1)
        nearf = np.float32(near)
        n_faces = faces.shape[0]
        for p in range(height * width):
            depth[p] = np.inf
            nearest[p] = -1
        in_front = True          # the whole mesh in front of the near plane: culling applies
        if cull:
            for f in range(n_faces):
                for k in range(3):
                    if not (z[faces[f, k]] > nearf):
                        in_front = False
        for f in range(n_faces):
            i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
            x0, x1, x2 = x[i0], x[i1], x[i2]
            y0, y1, y2 = y[i0], y[i1], y[i2]
            z0, z1, z2 = z[i0], z[i1], z[i2]
            if cull and in_front:
                signed = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
                if not (signed * orient[f] <= zero):
                    continue                                     # seen from behind
            z_min = min(min(z0, z1), z2)
            c0 = max(np.ceil(min(min(x0, x1), x2) - half), zero)
            c1 = min(np.floor(max(max(x0, x1), x2) - half), last_col)
            r0 = max(np.ceil(min(min(y0, y1), y2) - half), zero)
            r1 = min(np.floor(max(max(y0, y1), y2) - half), last_row)
            cx, cy = c0 + half, r0 + half
            x0, x1, x2 = x0 - cx, x1 - cx, x2 - cx
            y0, y1, y2 = y0 - cy, y1 - cy, y2 - cy
            area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
            if not (z_min > nearf and area != zero and np.isfinite(area)):
                continue
            n_cols = c1 - c0 + one
            n_rows = r1 - r0 + one
            if not (n_cols > zero and n_rows > zero):
                continue
            inv = one / area
            a0, a1, a2 = (y1 - y2) * inv, (y2 - y0) * inv, (y0 - y1) * inv
            b0, b1, b2 = (x2 - x1) * inv, (x0 - x2) * inv, (x1 - x0) * inv
            k0, k1, k2 = (x1 * y2 - x2 * y1) * inv, (x2 * y0 - x0 * y2) * inv, (x0 * y1 - x1 * y0) * inv
            az = a0 * z0 + a1 * z1 + a2 * z2
            bz = b0 * z0 + b1 * z1 + b2 * z2
            kz = k0 * z0 + k1 * z1 + k2 * z2
            col0, row0 = int(c0), int(r0)
            for dr in range(int(n_rows)):
                fr = np.float32(dr)
                row = (row0 + dr) * width + col0
                # the row's constant parts first, as PyTorch: (A * dc + B * dr) + C
                for dc in range(int(n_cols)):
                    fc = np.float32(dc)
                    w0 = a0 * fc + b0 * fr + k0
                    w1 = a1 * fc + b1 * fr + k1
                    w2 = a2 * fc + b2 * fr + k2
                    zz = az * fc + bz * fr + kz
                    if min(min(w0, w1), w2) >= zero and zz > nearf and zz < depth[row + dc]:
                        depth[row + dc] = zz
                        nearest[row + dc] = f

    @numba.njit(cache=True, nogil=True)
    def _pose_total(x, y, faces, nearest, table, clutter, has_clutter, width, gx, gy, grad):
        """Sum over one pose's covered pixels of ``max(s_o, s_c) - max(0, s_c)`` (``s_o``
        without clutter); with ``grad`` also adds its gradient w.r.t. x, y (V,) into
        gx, gy (V,) float64. table: (V, P) the image's similarity table; clutter: (P,)."""
        half = np.float32(0.5)
        zero = np.float32(0.0)
        total = np.float32(0.0)
        for p in range(nearest.shape[0]):
            f = nearest[p]
            if f < 0:
                continue
            i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
            px = np.float32(p % width) + half
            py = np.float32(p // width) + half
            x0, x1, x2 = x[i0], x[i1], x[i2]
            y0, y1, y2 = y[i0], y[i1], y[i2]
            u0, u1, u2 = x0 - px, x1 - px, x2 - px                   # corners - pixel
            v0, v1, v2 = y0 - py, y1 - py, y2 - py
            area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
            e0 = (u1 * v2 - u2 * v1) / area
            e1 = (u2 * v0 - u0 * v2) / area
            e2 = (u0 * v1 - u1 * v0) / area
            s0, s1, s2 = table[i0, p], table[i1, p], table[i2, p]
            s_o = e0 * s0 + e1 * s1 + e2 * s2
            slope = np.float32(1.0)
            if has_clutter:
                s_c = clutter[p]
                total += max(s_o, s_c) - max(s_c, zero)
                # torch.maximum's gradient: to the larger, split evenly on a tie
                slope = np.float32(1.0) if s_o > s_c else (np.float32(0.5) if s_o == s_c else zero)
            else:
                total += s_o
            if grad and slope != zero:
                g0, g1, g2 = slope * s0, slope * s1, slope * s2
                dot = g0 * e0 + g1 * e1 + g2 * e2
                h0, h1, h2 = (g0 - dot) / area, (g1 - dot) / area, (g2 - dot) / area
                gx[i0] += v1 * h2 - v2 * h1
                gx[i1] += v2 * h0 - v0 * h2
                gx[i2] += v0 * h1 - v1 * h0
                gy[i0] += h1 * u2 - h2 * u1
                gy[i1] += h2 * u0 - h0 * u2
                gy[i2] += h0 * u1 - h1 * u0
        return total

    @numba.njit(cache=True, nogil=True)
    def _project(verts, rotation, center, principal, focal, x, y, z):
        """Screen planes x, y, z (V,) of one camera: rotation (3, 3), centre (3,), principal
        point (2,), focal length. The float32 operations of
        :func:`nemopose.geometry.project_to_screen_planes`, in its order (so the same numbers)."""
        one = np.float32(1.0)
        for v in range(verts.shape[0]):
            r0 = verts[v, 0] - center[0]
            r1 = verts[v, 1] - center[1]
            r2 = verts[v, 2] - center[2]
            cx = r0 * rotation[0, 0] + r1 * rotation[0, 1] + r2 * rotation[0, 2]
            cy = r0 * rotation[1, 0] + r1 * rotation[1, 1] + r2 * rotation[1, 2]
            cz = r0 * rotation[2, 0] + r1 * rotation[2, 1] + r2 * rotation[2, 2]
            depth = -cz
            scale = (one / depth) * focal             # PyTorch's `focal / depth`: reciprocal, then product
            x[v] = cx * scale + principal[0]
            y[v] = -cy * scale + principal[1]
            z[v] = depth

    @numba.njit(cache=True, nogil=True)
    def _chain(verts, rotation, center, focal, x, y, z, gx, gy, g_rot, g_center, g_principal):
        """The gradient of the pose's sum w.r.t. its camera from the one w.r.t. the screen
        planes (gx, gy (V,) float64): ``col = X s + p_x``, ``row = -Y s + p_y`` with
        ``s = f / d``, ``d = -Z`` and ``(X, Y, Z) = R (v - c)``. Writes g_rot (3, 3),
        g_center (3,), g_principal (2,)."""
        acc = np.zeros(14)                 # dR (9), dc (3), dp (2), in float64
        for v in range(verts.shape[0]):
            if gx[v] == 0.0 and gy[v] == 0.0:
                continue                   # (a vertex of no covered face)
            r0 = np.float64(verts[v, 0]) - center[0]
            r1 = np.float64(verts[v, 1]) - center[1]
            r2 = np.float64(verts[v, 2]) - center[2]
            cx = r0 * rotation[0, 0] + r1 * rotation[0, 1] + r2 * rotation[0, 2]
            cy = r0 * rotation[1, 0] + r1 * rotation[1, 1] + r2 * rotation[1, 2]
            depth = -(r0 * rotation[2, 0] + r1 * rotation[2, 1] + r2 * rotation[2, 2])
            scale = np.float64(focal) / depth
            g_x = gx[v] * scale                               # dL/dX
            g_y = -gy[v] * scale                              # dL/dY
            g_z = (gx[v] * cx - gy[v] * cy) * scale / depth   # dL/dZ (through d = -Z)
            for j, r in ((0, r0), (1, r1), (2, r2)):
                acc[j] += g_x * r
                acc[3 + j] += g_y * r
                acc[6 + j] += g_z * r
                acc[9 + j] -= g_x * rotation[0, j] + g_y * rotation[1, j] + g_z * rotation[2, j]
            acc[12] += gx[v]
            acc[13] += gy[v]
        for k in range(9):
            g_rot[k // 3, k % 3] = acc[k]
        for k in range(3):
            g_center[k] = acc[9 + k]
        g_principal[0] = acc[12]
        g_principal[1] = acc[13]

    @numba.njit(cache=True, nogil=True)
    def _one_pose(n, verts, rotation, center, principal, focal, faces, orient, cull, near, height, width, image, sim,
                  clutter, has_clutter, grad, total, g_rot, g_center, g_principal, nearest_out, keep_nearest):
        """Pose n (rotation (N, 3, 3), center (N, 3), principal (N, 2)): projection,
        z-buffer, covered sum into ``total[n]`` and, with ``grad``, its gradient w.r.t. the
        camera into ``g_rot[n], g_center[n], g_principal[n]``. With ``keep_nearest`` the
        nearest faces go to ``nearest_out[n]`` (P,) (tests)."""
        n_verts = verts.shape[0]
        n_pix = height * width
        # scratch per pose: a single image never pays for a batch
        x = np.empty(n_verts, np.float32)
        y = np.empty(n_verts, np.float32)
        z = np.empty(n_verts, np.float32)
        depth = np.empty(n_pix, np.float32)
        nearest = np.empty(n_pix, np.int32)
        _project(verts, rotation[n], center[n], principal[n], focal, x, y, z)
        _zbuffer(x, y, z, faces, orient, cull, near, height, width, depth, nearest)
        if keep_nearest:
            nearest_out[n, :] = nearest
        b = image[n]
        gx = np.zeros(n_verts, np.float64)
        gy = np.zeros(n_verts, np.float64)
        total[n] = _pose_total(x, y, faces, nearest, sim[b], clutter[b if has_clutter else 0], has_clutter,
                               width, gx, gy, grad)
        if grad:
            _chain(verts, rotation[n], center[n], focal, x, y, z, gx, gy, g_rot[n], g_center[n], g_principal[n])

    @numba.njit(cache=True, nogil=True)
    def _pose_kernel(lo, hi, verts, rotation, center, principal, focal, faces, orient, cull, near, height, width, image,
                     sim, clutter, has_clutter, grad, total, g_rot, g_center, g_principal, nearest_out, keep_nearest):
        """:func:`_one_pose` for poses ``lo`` to ``hi - 1`` (a chunk of :func:`_in_parallel`)."""
        for n in range(lo, hi):
            _one_pose(n, verts, rotation, center, principal, focal, faces, orient, cull, near, height, width, image,
                      sim, clutter, has_clutter, grad, total, g_rot, g_center, g_principal, nearest_out, keep_nearest)

    @numba.njit(cache=True, nogil=True)
    def _grid_kernel(lo, hi, start, pixel, vertex, bary, sim, clutter, has_clutter, out):
        """``out[b, k]`` for jobs ``b * K + k`` from ``lo`` to ``hi - 1``: the covered sum of
        pre-rasterised pose k against image b; pose k's covered pixels are
        ``start[k]:start[k + 1]`` of pixel (M,), vertex (3, M), bary (3, M)."""
        n_poses = out.shape[1]
        zero = np.float32(0.0)
        for job in range(lo, hi):
            b = job // n_poses
            k = job - b * n_poses
            table = sim[b]
            total = np.float32(0.0)
            for m in range(start[k], start[k + 1]):
                p = pixel[m]
                s_o = (bary[0, m] * table[vertex[0, m], p] + bary[1, m] * table[vertex[1, m], p]
                       + bary[2, m] * table[vertex[2, m], p])
                if has_clutter:
                    s_c = clutter[b, p]       # (only read with the clutter model)
                    total += max(s_o, s_c) - max(s_c, zero)
                else:
                    total += s_o
            out[b, k] = total


def _clutter_array(clutter_score: torch.Tensor | None, n_pix: int) -> tuple[np.ndarray, bool]:
    if clutter_score is None:
        return np.zeros((1, n_pix), np.float32), False
    return _array(clutter_score), True


def _run_poses(verts: np.ndarray, rotation: torch.Tensor, center: torch.Tensor, principal: torch.Tensor,
               focal: float, mesh: KernelMesh, image_index: torch.Tensor, sim: torch.Tensor,
               clutter_score: torch.Tensor | None, height: int, width: int, near: float, grad: bool,
               keep_nearest: bool = False):
    """One call of the pose kernel; numpy outputs (total, g_rot, g_center, g_principal, nearest)."""
    n_poses = rotation.shape[0]
    total = np.empty(n_poses, np.float32)
    shape = n_poses if grad else 1                    # (no gradient buffers without a gradient)
    g_rot, g_center, g_principal = (np.empty((shape,) + tail, np.float32) for tail in ((3, 3), (3,), (2,)))
    nearest = np.empty((n_poses, height * width) if keep_nearest else (1, 1), np.int32)
    clutter, has_clutter = _clutter_array(clutter_score, height * width)
    if n_poses:
        _in_parallel(_pose_kernel, n_poses, verts, _array(rotation), _array(center), _array(principal),
                     np.float32(focal), mesh.faces, mesh.orientation, mesh.cull, float(near), height, width,
                     _array(image_index, torch.int64), _array(sim), clutter, has_clutter, grad, total, g_rot, g_center,
                     g_principal, nearest, keep_nearest)
    return total, g_rot, g_center, g_principal, nearest


@dataclass(frozen=True)
class Camera:
    """What the kernels need of the scorer's mesh and camera, built once (:meth:`build`).

    Attributes:
        verts: (V, 3) float32 CAD-frame vertices.
        mesh: the faces (:class:`KernelMesh`).
        focal: focal length in pixels; principal: (x, y) principal point in map pixels.
        height, width: the map size.
    """

    verts: np.ndarray
    mesh: KernelMesh
    focal: float
    principal: tuple[float, float]
    height: int
    width: int

    @classmethod
    def build(cls, verts: torch.Tensor, faces: torch.Tensor, cull_backfaces: torch.Tensor | None, camera) -> "Camera":
        """From the scorer's vertices (V, 3), faces (F, 3), back-face orientation (or None)
        and :class:`nemopose.render.RenderCamera`."""
        return cls(_array(verts.cpu()), KernelMesh.build(faces, cull_backfaces), float(camera.focal),
                   tuple(float(v) for v in camera.principal), *camera.image_size)

    def rotation_and_principal(self, center: torch.Tensor, theta: torch.Tensor, shift: torch.Tensor | None):
        """The camera rotations (N, 3, 3) and principal points (N, 2) of N poses, in PyTorch
        (differentiable), as :func:`nemopose.render.project_vertices` computes them."""
        rotation = geometry.camera_rotation(center, theta.reshape(-1).to(center))
        principal = torch.tensor(self.principal, dtype=center.dtype).expand(center.shape[0], 2)
        return rotation, principal if shift is None else principal + shift


def nearest_faces(camera: Camera, center: torch.Tensor, theta: torch.Tensor, shift: torch.Tensor | None = None, *,
                  near: float = 1e-6) -> torch.Tensor:
    """(N, H * W) int64: the nearest face at every pixel of N poses (centres (N, 3), thetas
    (N,), shifts (N, 2) or None), -1 where no face covers it: the kernels' z-buffer, for tests."""
    rotation, principal = camera.rotation_and_principal(center, theta, shift)
    n_pix = camera.height * camera.width
    sim = torch.zeros((1, camera.verts.shape[0], n_pix))
    image = torch.zeros(center.shape[0], dtype=torch.long)
    *_, nearest = _run_poses(camera.verts, rotation, center, principal, camera.focal, camera.mesh, image, sim, None,
                             camera.height, camera.width, near, False, keep_nearest=True)
    return torch.from_numpy(nearest).long()


class _PoseTotals(torch.autograd.Function):
    """Per pose, ``sum over covered pixels of max(s_o, s_c) - max(0, s_c)``; differentiable
    with respect to the camera rotations (N, 3, 3), centres (N, 3) and principal points (N, 2)."""

    @staticmethod
    def forward(ctx, rotation, center, principal, camera, image_index, sim, clutter_score, near):
        grad = any(ctx.needs_input_grad[:3])
        total, *grads, _ = _run_poses(camera.verts, rotation, center, principal, camera.focal, camera.mesh,
                                      image_index, sim, clutter_score, camera.height, camera.width, near, grad)
        if grad:
            ctx.save_for_backward(*(torch.from_numpy(g) for g in grads))
        return torch.from_numpy(total)

    @staticmethod
    def backward(ctx, grad_total):
        g_rot, g_center, g_principal = ctx.saved_tensors
        return (g_rot * grad_total.reshape(-1, 1, 1), g_center * grad_total.unsqueeze(1),
                g_principal * grad_total.unsqueeze(1), None, None, None, None, None)


def pose_totals(camera: Camera, center: torch.Tensor, theta: torch.Tensor, shift: torch.Tensor | None,
                image_index: torch.Tensor, sim: torch.Tensor, clutter_score: torch.Tensor | None, *,
                near: float = 1e-6) -> torch.Tensor:
    """(N,) the :func:`nemopose.solve.score.covered_sum` of N poses, differentiable w.r.t. the
    pose: one kernel call projects, rasterises and scores every pose and computes the
    gradient w.r.t. its camera; PyTorch's autograd takes it on to ``center``, ``theta`` and
    ``shift`` (through :func:`nemopose.geometry.camera_rotation`, a few (N, 3, 3) operations).

    Args:
        camera: the scorer's mesh and camera (:class:`Camera`).
        center: (N, 3) float32 camera centres; theta: (N,); shift: (N, 2) principal-point
            shifts in map pixels, or None.
        image_index: (N,) the image of each pose in ``sim``.
        sim: (B, V, H * W) similarity tables (read in place when float32 and contiguous);
            clutter_score: (B, H * W) or None.
    """
    if center.dtype != torch.float32:
        raise ValueError(f"pose_totals: float32 camera centres expected, got {center.dtype}")
    rotation, principal = camera.rotation_and_principal(center, theta, shift)
    return _PoseTotals.apply(rotation, center, principal, camera, image_index, sim, clutter_score, near)


@dataclass(frozen=True)
class GridPixels:
    """The covered pixels of K pre-rasterised poses, grouped by pose (:meth:`build`).

    Attributes:
        start: (K + 1,) int64, pose k's pixels are ``start[k]:start[k + 1]``.
        pixel: (M,) int64 flat pixel index; vertex: (3, M) int64; bary: (3, M) float32.
    """

    start: np.ndarray
    pixel: np.ndarray
    vertex: np.ndarray
    bary: np.ndarray

    @classmethod
    def build(cls, pix_to_face: torch.Tensor, bary: torch.Tensor, faces: torch.Tensor) -> "GridPixels":
        """From :class:`nemopose.render.Fragments` ``pix_to_face`` (K, H, W) and ``bary``
        (K, H, W, 3) of the faces (F, 3)."""
        k = pix_to_face.shape[0]
        p2f = pix_to_face.reshape(k, -1)
        n_pix = p2f.shape[1]
        covered = torch.nonzero(p2f.reshape(-1) >= 0).squeeze(1)                 # ascending: pose-major
        pose = torch.div(covered, n_pix, rounding_mode="floor")
        start = torch.zeros(k + 1, dtype=torch.long)
        start[1:] = torch.cumsum(torch.bincount(pose, minlength=k), 0)
        vertex = faces.long().index_select(0, p2f.reshape(-1).index_select(0, covered)).t()   # (3, M)
        weights = bary.detach().reshape(-1, 3).index_select(0, covered).t()                # (3, M)
        return cls(start.numpy(), _array(covered - pose * n_pix, torch.int64), _array(vertex, torch.int64),
                   _array(weights))


def grid_totals(grid: GridPixels, sim: torch.Tensor, clutter_score: torch.Tensor | None) -> torch.Tensor:
    """(B, K) the :func:`nemopose.solve.score.covered_sum` of every image (tables ``sim``
    (B, V, P), ``clutter_score`` (B, P) or None) against every pre-rasterised pose."""
    n_images, n_pix = sim.shape[0], sim.shape[2]
    out = np.empty((n_images, grid.start.shape[0] - 1), np.float32)
    clutter, has_clutter = _clutter_array(clutter_score, n_pix)
    if out.size:
        _in_parallel(_grid_kernel, out.size, grid.start, grid.pixel, grid.vertex, grid.bary, _array(sim), clutter,
                     has_clutter, out)
    return torch.from_numpy(out)
