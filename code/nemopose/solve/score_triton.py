"""The pose loss of :class:`nemopose.solve.score.PoseScorer` as two Triton kernels (CUDA).

On a GPU the plain-PyTorch step (:func:`nemopose.render.rasterize_covered` plus the
gathers of :meth:`PoseScorer.losses`) is some two hundred small kernel launches: the step
is launch-bound. Here one optimiser step's loss and its gradient are two kernels:

1. ``_zbuffer_kernel``, one lane per (pose, face): the same face table as
   :mod:`nemopose.render.zbuffer` (box clipped to the map, affine barycentrics and depth relative to
   the box's first pixel, back faces culled by the same rule), then every pixel of the box:
   inside test, and an ``atomic_min`` of the packed key ``(float32 depth bits << 32) | face``
   into an (N, P) z-buffer: the nearest face, ties to the lowest index, as on the CPU.
2. ``_loss_kernel``, one lane per (pose, pixel): the covered pixel's barycentrics (the
   formula of :class:`nemopose.render.raster._Barycentric`), ``s_o`` from the similarity table,
   ``max(s_o, s_c) - max(0, s_c)`` summed per pose and block (a fixed order: deterministic
   sums), and, when asked, the gradient of that sum with respect to the screen ``x, y`` of
   the face's vertices (the hand-written backward of ``_Barycentric``), added atomically.

:func:`covered_totals` returns the per-pose sum as an autograd function; the scorer turns it
into the loss (:func:`nemopose.solve.score.covered_pose_loss`). Screen-space barycentrics only
(``perspective_correct=False``, NeMo's setting); ``method="similarity"`` only.

Without a GPU, ``TRITON_INTERPRET=1`` (set before this module is imported) runs the same
kernels on the CPU: the tests compare them with the PyTorch path there.

Parity with the CPU. Both kernels are compiled without multiply-add fusion
(``enable_fp_fusion=False``, :data:`LAUNCH_OPTIONS`; Triton fuses ``a * b + c`` into one
``fma.rn.f32`` by default): every product and sum rounds as in PyTorch and in the
interpreter, so the inside tests and depths, hence the z-buffer, are the CPU's bit for bit;
divisions are IEEE (``div_rn``). Only the order of the gradient's atomic additions differs
(float sums, about 1e-7 relative). Launches run under the tensors' CUDA device, and a
z-buffer launch whose lane index (pose x face) would pass int32 is split by poses.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl
except ImportError:          # pragma: no cover - exercised where triton is missing
    triton = None

__all__ = ["unavailable_reason", "KernelMesh", "nearest_face_keys", "covered_totals", "compile_ahead"]

_EMPTY = torch.iinfo(torch.int64).max
_FACE_BLOCK = 128
_PIXEL_BLOCK = 256
# Largest lane count (pose x face) of one z-buffer launch: the lane index is int32 and the last
# block reaches BLOCK lanes past the count. Larger launches are split by poses.
MAX_LANES = 2 ** 31 - 1 - 2 * _FACE_BLOCK
# Compile options of every launch (and of compile_ahead): no fma contraction (see above).
LAUNCH_OPTIONS = {"enable_fp_fusion": False}


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _on_device(t: torch.Tensor):
    """Launch under the tensor's CUDA device (Triton launches on the current one)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def unavailable_reason(device: torch.device) -> str | None:
    """Why the Triton kernels cannot run on ``device`` (None when they can)."""
    if triton is None:
        return "the triton package is not installed"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and interpreted():
        return None
    return f"Triton kernels need a CUDA device (or TRITON_INTERPRET=1 on the CPU), got {device}"


if triton is not None:

    @triton.jit
    def _corners(faces_ptr, x_ptr, y_ptr, row, f, mask):
        """Vertex indices and screen x, y of faces ``f`` of the pose whose planes start at ``row``."""
        v0 = tl.load(faces_ptr + 3 * f, mask=mask, other=0)
        v1 = tl.load(faces_ptr + 3 * f + 1, mask=mask, other=0)
        v2 = tl.load(faces_ptr + 3 * f + 2, mask=mask, other=0)
        x0 = tl.load(x_ptr + row + v0, mask=mask, other=0.0)
        x1 = tl.load(x_ptr + row + v1, mask=mask, other=0.0)
        x2 = tl.load(x_ptr + row + v2, mask=mask, other=0.0)
        y0 = tl.load(y_ptr + row + v0, mask=mask, other=0.0)
        y1 = tl.load(y_ptr + row + v1, mask=mask, other=0.0)
        y2 = tl.load(y_ptr + row + v2, mask=mask, other=0.0)
        return v0, v1, v2, x0, x1, x2, y0, y1, y2

    @triton.jit
    def _relative(x0, x1, x2, y0, y1, y2, px, py):
        return x0 - px, x1 - px, x2 - px, y0 - py, y1 - py, y2 - py

    @triton.jit
    def _zbuffer_kernel(x_ptr, y_ptr, z_ptr, faces_ptr, orient_ptr, front_ptr, zbuf_ptr,
                        n_instances, n_faces, n_verts, height, width, near,
                        CULL: tl.constexpr, BLOCK: tl.constexpr):
        lane = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = lane < n_instances
        n = (lane // n_faces).to(tl.int64)
        f = lane % n_faces
        row = n * n_verts
        v0, v1, v2, x0, x1, x2, y0, y1, y2 = _corners(faces_ptr, x_ptr, y_ptr, row, f, live)
        z0 = tl.load(z_ptr + row + v0, mask=live, other=0.0)
        z1 = tl.load(z_ptr + row + v1, mask=live, other=0.0)
        z2 = tl.load(z_ptr + row + v2, mask=live, other=0.0)
        valid = live
        if CULL:
            # seen from behind: signed area with the outward orientation's sign, only where
            # the whole mesh is in front of the near plane (zbuffer._face_table)
            area_abs = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
            orient = tl.load(orient_ptr + f, mask=live, other=0.0)
            in_front = tl.load(front_ptr + n, mask=live, other=0) != 0
            valid = valid & ((area_abs * orient <= 0) | (in_front == 0))
        finite = (x0 == x0) & (x1 == x1) & (x2 == x2) & (y0 == y0) & (y1 == y1) & (y2 == y2)
        finite = finite & (tl.abs(x0) < 1e30) & (tl.abs(x1) < 1e30) & (tl.abs(x2) < 1e30)
        finite = finite & (tl.abs(y0) < 1e30) & (tl.abs(y1) < 1e30) & (tl.abs(y2) < 1e30)
        valid = valid & finite
        x0 = tl.where(finite, x0, 0.0)
        x1 = tl.where(finite, x1, 0.0)
        x2 = tl.where(finite, x2, 0.0)
        y0 = tl.where(finite, y0, 0.0)
        y1 = tl.where(finite, y1, 0.0)
        y2 = tl.where(finite, y2, 0.0)
        c0 = tl.maximum(tl.ceil(tl.minimum(tl.minimum(x0, x1), x2) - 0.5), 0.0)
        c1 = tl.minimum(tl.floor(tl.maximum(tl.maximum(x0, x1), x2) - 0.5), width - 1.0)
        r0 = tl.maximum(tl.ceil(tl.minimum(tl.minimum(y0, y1), y2) - 0.5), 0.0)
        r1 = tl.minimum(tl.floor(tl.maximum(tl.maximum(y0, y1), y2) - 0.5), height - 1.0)
        # corners relative to the centre of the box's first pixel (small, precise constants)
        x0, x1, x2, y0, y1, y2 = _relative(x0, x1, x2, y0, y1, y2, c0 + 0.5, r0 + 0.5)
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        z_min = tl.minimum(tl.minimum(z0, z1), z2)
        valid = valid & (z_min > near) & (area != 0)
        # IEEE divisions (div_rn), as PyTorch's, not the GPU's default approximate one
        inv_area = tl.math.div_rn(tl.full([BLOCK], 1.0, tl.float32), tl.where(area != 0, area, 1.0))
        a0 = (y1 - y2) * inv_area
        a1 = (y2 - y0) * inv_area
        a2 = (y0 - y1) * inv_area
        b0 = (x2 - x1) * inv_area
        b1 = (x0 - x2) * inv_area
        b2 = (x1 - x0) * inv_area
        k0 = (x1 * y2 - x2 * y1) * inv_area
        k1 = (x2 * y0 - x0 * y2) * inv_area
        k2 = (x0 * y1 - x1 * y0) * inv_area
        az = a0 * z0 + a1 * z1 + a2 * z2
        bz = b0 * z0 + b1 * z1 + b2 * z2
        kz = k0 * z0 + k1 * z1 + k2 * z2
        n_cols = tl.where(valid, c1 - c0 + 1.0, 0.0)
        n_rows = tl.where(valid, r1 - r0 + 1.0, 0.0)
        n_cols = tl.maximum(n_cols, 0.0).to(tl.int32)
        n_rows = tl.maximum(n_rows, 0.0).to(tl.int32)
        col0 = tl.where(valid, c0, 0.0).to(tl.int64)
        row0 = tl.where(valid, r0, 0.0).to(tl.int64)
        base = n * (height * width) + row0 * width + col0
        face_bits = f.to(tl.int64)
        max_rows = tl.max(n_rows, 0)
        max_cols = tl.max(n_cols, 0)
        for dr in range(0, max_rows):
            for dc in range(0, max_cols):
                fc = dc * 1.0
                fr = dr * 1.0
                w0 = a0 * fc + b0 * fr + k0
                w1 = a1 * fc + b1 * fr + k1
                w2 = a2 * fc + b2 * fr + k2
                z = az * fc + bz * fr + kz
                keep = (dr < n_rows) & (dc < n_cols) & (tl.minimum(tl.minimum(w0, w1), w2) >= 0) & (z > near)
                key = (z.to(tl.int32, bitcast=True).to(tl.int64) << 32) | face_bits
                tl.atomic_min(zbuf_ptr + base + dr * width + dc, key, mask=keep)

    @triton.jit
    def _loss_kernel(x_ptr, y_ptr, faces_ptr, zbuf_ptr, image_ptr, sim_ptr, clutter_ptr,
                     partial_ptr, gx_ptr, gy_ptr, n_verts, height, width, n_blocks,
                     CLUTTER: tl.constexpr, GRAD: tl.constexpr, BLOCK: tl.constexpr):
        n = tl.program_id(0).to(tl.int64)
        block = tl.program_id(1)
        n_pix = height * width
        p = block * BLOCK + tl.arange(0, BLOCK)
        inside = p < n_pix
        key = tl.load(zbuf_ptr + n * n_pix + p, mask=inside, other=-1)
        covered = inside & (key >= 0) & (key != 0x7FFFFFFFFFFFFFFF)
        f = tl.where(covered, key & 0xFFFFFFFF, 0).to(tl.int32)
        row = n * n_verts
        v0, v1, v2, x0, x1, x2, y0, y1, y2 = _corners(faces_ptr, x_ptr, y_ptr, row, f, covered)
        x1 = tl.where(covered, x1, 1.0)           # a unit triangle where empty: no division by 0
        y2 = tl.where(covered, y2, 1.0)
        px = (p % width).to(tl.float32) + 0.5
        py = (p // width).to(tl.float32) + 0.5
        u0, u1, u2, w0, w1, w2 = _relative(x0, x1, x2, y0, y1, y2, px, py)       # corners - pixel
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        e0 = tl.math.div_rn(u1 * w2 - u2 * w1, area)
        e1 = tl.math.div_rn(u2 * w0 - u0 * w2, area)
        e2 = tl.math.div_rn(u0 * w1 - u1 * w0, area)
        image = tl.load(image_ptr + n).to(tl.int64)
        table = sim_ptr + image * n_verts * n_pix + p
        s0 = tl.load(table + v0.to(tl.int64) * n_pix, mask=covered, other=0.0)
        s1 = tl.load(table + v1.to(tl.int64) * n_pix, mask=covered, other=0.0)
        s2 = tl.load(table + v2.to(tl.int64) * n_pix, mask=covered, other=0.0)
        s_o = e0 * s0 + e1 * s1 + e2 * s2
        if CLUTTER:
            s_c = tl.load(clutter_ptr + image * n_pix + p, mask=covered, other=0.0)
            delta = tl.maximum(s_o, s_c) - tl.maximum(s_c, 0.0)
            slope = tl.where(s_o > s_c, 1.0, tl.where(s_o == s_c, 0.5, 0.0))
        else:
            delta = s_o
            slope = tl.full([BLOCK], 1.0, tl.float32)
        delta = tl.where(covered, delta, 0.0)
        tl.store(partial_ptr + n * n_blocks + block, tl.sum(delta, 0))
        if GRAD:
            g0 = slope * s0
            g1 = slope * s1
            g2 = slope * s2
            dot = g0 * e0 + g1 * e1 + g2 * e2
            h0 = tl.math.div_rn(g0 - dot, area)
            h1 = tl.math.div_rn(g1 - dot, area)
            h2 = tl.math.div_rn(g2 - dot, area)
            tl.atomic_add(gx_ptr + row + v0, w1 * h2 - w2 * h1, mask=covered)
            tl.atomic_add(gx_ptr + row + v1, w2 * h0 - w0 * h2, mask=covered)
            tl.atomic_add(gx_ptr + row + v2, w0 * h1 - w1 * h0, mask=covered)
            tl.atomic_add(gy_ptr + row + v0, h1 * u2 - h2 * u1, mask=covered)
            tl.atomic_add(gy_ptr + row + v1, h2 * u0 - h0 * u2, mask=covered)
            tl.atomic_add(gy_ptr + row + v2, h0 * u1 - h1 * u0, mask=covered)


_SIGNATURES = {
    "zbuffer": {"x_ptr": "*fp32", "y_ptr": "*fp32", "z_ptr": "*fp32", "faces_ptr": "*i32", "orient_ptr": "*fp32",
                "front_ptr": "*i32", "zbuf_ptr": "*i64", "n_instances": "i32", "n_faces": "i32", "n_verts": "i32",
                "height": "i32", "width": "i32", "near": "fp32", "CULL": "constexpr", "BLOCK": "constexpr"},
    "loss": {"x_ptr": "*fp32", "y_ptr": "*fp32", "faces_ptr": "*i32", "zbuf_ptr": "*i64", "image_ptr": "*i64",
             "sim_ptr": "*fp32", "clutter_ptr": "*fp32", "partial_ptr": "*fp32", "gx_ptr": "*fp32", "gy_ptr": "*fp32",
             "n_verts": "i32", "height": "i32", "width": "i32", "n_blocks": "i32",
             "CLUTTER": "constexpr", "GRAD": "constexpr", "BLOCK": "constexpr"},
}


def compile_ahead(arch: int = 90) -> dict[str, dict[str, str]]:
    """Compile every variant of both kernels for an NVIDIA GPU of compute capability
    ``arch`` (90: H100/H200) without a GPU (Triton's own ptxas), with the launch options
    (:data:`LAUNCH_OPTIONS`), e.g. to check that they build and hold no fused multiply-add. Needs triton and ``TRITON_INTERPRET`` unset when this module was imported.
    Returns ``{variant: compiled assembly by kind (ttir, ptx, cubin, ...)}``."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if interpreted():
        raise RuntimeError("compile_ahead: TRITON_INTERPRET is set; the kernels are interpreted here")
    target = GPUTarget("cuda", arch, 32)
    variants = [("zbuffer", _zbuffer_kernel, {"CULL": cull, "BLOCK": _FACE_BLOCK}) for cull in (True, False)]
    variants += [("loss", _loss_kernel, {"CLUTTER": clutter, "GRAD": grad, "BLOCK": _PIXEL_BLOCK})
                 for clutter in (True, False) for grad in (True, False)]
    out = {}
    for name, kernel, constants in variants:
        src = ASTSource(fn=kernel, signature=_SIGNATURES[name], constexprs=constants)
        label = name + "".join(f" {k}={v}" for k, v in constants.items() if k != "BLOCK")
        out[label] = triton.compile(src, target=target, options=dict(LAUNCH_OPTIONS)).asm
    return out


@dataclass(frozen=True)
class KernelMesh:
    """A mesh's faces as the kernels read them, built once per mesh (:meth:`build`).

    Attributes:
        faces: (F, 3) int32, contiguous.
        used: the vertices the faces use (their depths decide whether culling applies).
        orientation: (F,) float32 outward orientation for back-face culling, or None.
    """

    faces: torch.Tensor
    used: torch.Tensor
    orientation: torch.Tensor | None

    @classmethod
    def build(cls, faces: torch.Tensor, cull_backfaces: torch.Tensor | None = None) -> "KernelMesh":
        """From (F, 3) faces and, to cull back faces, their (F,) outward orientation
        (:func:`nemopose.mesh.convex_face_orientation`). ``torch.unique`` synchronises a
        GPU: build once, not every step."""
        orientation = None if cull_backfaces is None else cull_backfaces.to(faces.device, torch.float32).contiguous()
        return cls(faces.to(torch.int32).contiguous(), torch.unique(faces.long()), orientation)


def nearest_face_keys(planes: torch.Tensor, mesh: KernelMesh, height: int, width: int, *,
                      near: float = 1e-6) -> torch.Tensor:
    """The (N, H * W) int64 z-buffer of packed ``(depth bits << 32) | face`` keys (int64 max
    where no face covers the pixel) of screen planes (3, N, V) (no autograd)."""
    _, n_poses, n_verts = planes.shape
    planes = planes.detach().to(torch.float32).contiguous()
    zbuf = torch.full((n_poses, height * width), _EMPTY, dtype=torch.int64, device=planes.device)
    n_instances = n_poses * mesh.faces.shape[0]
    if n_instances == 0:
        return zbuf
    if mesh.orientation is not None:
        front = (planes[2].index_select(1, mesh.used).amin(1) > near).to(torch.int32)
        orient = mesh.orientation
    else:
        front = orient = torch.zeros(1, dtype=torch.int32, device=planes.device)
    n_faces = mesh.faces.shape[0]
    per_launch = max(1, MAX_LANES // n_faces)         # poses per launch: lanes within int32
    cull = mesh.orientation is not None
    with _on_device(planes):
        for first in range(0, n_poses, per_launch):
            last = min(first + per_launch, n_poses)
            lanes = (last - first) * n_faces
            _zbuffer_kernel[(triton.cdiv(lanes, _FACE_BLOCK),)](
                planes[0, first:last], planes[1, first:last], planes[2, first:last], mesh.faces, orient,
                front[first:last] if cull else front, zbuf[first:last], lanes, n_faces, n_verts, height, width,
                near, CULL=cull, BLOCK=_FACE_BLOCK, **LAUNCH_OPTIONS)
    return zbuf


class _CoveredTotals(torch.autograd.Function):
    """Per pose, ``sum over covered pixels of max(s_o, s_c) - max(0, s_c)``; differentiable
    with respect to the screen x and y planes (N, V)."""

    @staticmethod
    def forward(ctx, x, y, zbuf, faces32, image_index, sim, clutter_score, height, width):
        n_poses, n_verts = x.shape
        n_blocks = triton.cdiv(height * width, _PIXEL_BLOCK)
        partial = torch.empty((n_poses, n_blocks), dtype=torch.float32, device=x.device)
        grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        gx = torch.zeros_like(x) if grad else partial
        gy = torch.zeros_like(y) if grad else partial
        clutter = clutter_score if clutter_score is not None else partial
        if n_poses:
            with _on_device(x):
                _loss_kernel[(n_poses, n_blocks)](x, y, faces32, zbuf, image_index, sim, clutter, partial, gx, gy,
                                                  n_verts, height, width, n_blocks, CLUTTER=clutter_score is not None,
                                                  GRAD=grad, BLOCK=_PIXEL_BLOCK, **LAUNCH_OPTIONS)
        if grad:
            ctx.save_for_backward(gx, gy)
        return partial.sum(1)

    @staticmethod
    def backward(ctx, grad_total):
        gx, gy = ctx.saved_tensors
        scale = grad_total.unsqueeze(1)
        return gx * scale, gy * scale, None, None, None, None, None, None, None


def covered_totals(planes: torch.Tensor, mesh: KernelMesh, image_index: torch.Tensor, sim: torch.Tensor,
                   clutter_score: torch.Tensor | None, height: int, width: int, *, near: float = 1e-6) -> torch.Tensor:
    """(N,) the :func:`nemopose.solve.score.covered_sum` of N poses, differentiable w.r.t. the
    screen planes' x and y.

    Args:
        planes: (3, N, V) screen column, row and depth planes
            (:meth:`nemopose.solve.score.PoseScorer.screen` with ``planar=True``).
        mesh: the faces (:class:`KernelMesh`).
        image_index: (N,) the image of each pose in ``sim``.
        sim: (B, V, H * W) similarity tables; clutter_score: (B, H * W) or None.
    """
    zbuf = nearest_face_keys(planes, mesh, height, width, near=near)
    x, y = planes[0], planes[1]
    if x.dtype != torch.float32:
        raise ValueError(f"covered_totals: float32 screen planes expected, got {x.dtype}")
    return _CoveredTotals.apply(x.contiguous(), y.contiguous(), zbuf, mesh.faces, image_index.contiguous(),
                                sim.contiguous(), None if clutter_score is None else clutter_score.contiguous(),
                                height, width)
