"""The rasteriser's discrete stage: which face is nearest at each pixel (METHOD.md §5).

:func:`nemopose.render.rasterize` first decides, without autograd, the nearest face at
every pixel centre (here), then computes the barycentrics of those faces with autograd.

How it is fast without a compiled kernel, in plain PyTorch on the CPU:

- Every (face, image) instance is an entry of contiguous planes (:func:`_face_table`):
  PyTorch's CPU kernels are several times faster on contiguous planes than on the strided
  columns of (..., 3) tensors. With back-face culling (closed convex meshes such as NeMo's
  cuboids) the faces seen from behind are dropped first, half the work.
- Each face only visits the pixels inside its screen bounding box. All (face, pixel)
  candidates of the batch are enumerated at once (:func:`ragged`); each costs a
  gather of 13 coefficients and three multiply-adds of precomputed affine functions.
- The nearest face per pixel is one ``scatter_reduce`` (minimum) of packed 64-bit keys
  ``(float32 depth bits << 32) | face`` (:func:`_depth_test`): nearest depth first, then
  the lowest face index, so ties are deterministic (float64: two passes, same rule).
"""

from __future__ import annotations

import math

import torch

__all__ = ["nearest_faces"]


_EMPTY = torch.iinfo(torch.int64).max    # z-buffer key of a pixel that no face covers
_FACE_BITS = 32                          # packed key: float32 depth bits, then the face index


def _face_table(planes: torch.Tensor, faces: torch.Tensor, height: int, width: int, *,
                perspective_correct: bool, near: float, cull_backfaces: torch.Tensor | None):
    """Per-face stage of :func:`nearest_faces`, on contiguous planes of face instances.

    ``planes`` are the (3, V, B) screen coordinates, batch fastest: each face corner is a
    row gather. With ``cull_backfaces`` the faces seen from behind are dropped first, so
    that the rest of the work only sees the front half. Then each face's screen box is
    clipped to the image, faces that cannot cover a pixel centre (empty box, behind the
    near plane, degenerate) get no pixels, and every face is expressed as four affine
    functions of the pixel position relative to its box corner (three barycentrics and the
    depth, or inverse depth when perspective-correct, since ``1/z`` is affine in screen
    space), so that the constants stay small (precise in float32). Every quantity is a
    contiguous plane: PyTorch's CPU kernels are several times faster on those than on
    strided (F, B, 3) slices.

    Returns, for L face instances (face f in image b; all F * B without culling):
        coef: (13, L) planes ``A (4), B (4), C (4), n_cols``, with ``w = A * dc + B * dr + C``
            at the pixel (dc, dr) of the box.
        counts: (L,) long, pixels in the box, 0 for a dropped face.
        base: (L,) long, flat index (into B * H * W) of the box's first pixel.
        face: (L,) long, f.
    """
    batch, n_faces = planes.shape[2], faces.shape[0]
    corner = faces.t().reshape(-1)
    # per coordinate, one row gather (V, B) -> (3 corners, F * B): entry f * B + b
    (x0, x1, x2), (y0, y1, y2), (z0, z1, z2) = (
        plane.index_select(0, corner).reshape(3, -1).unbind(0) for plane in planes)
    instance = None
    if cull_backfaces is not None:
        # Seen from behind: the signed area has the sign of the outward orientation (see
        # rasterize). Only where the whole mesh is in front of the near plane: there the
        # camera is outside the (convex) mesh and no clipped front face lets a back one show.
        area = ((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)).reshape(n_faces, batch)
        z_min = torch.minimum(torch.minimum(z0, z1), z2).reshape(n_faces, batch)
        in_front = z_min.amin(0) > near                                          # (B,)
        front = (area * cull_backfaces.to(area.dtype).unsqueeze(1) <= 0) | ~in_front
        instance = torch.nonzero(front.reshape(-1)).squeeze(1)                   # (L,) into F * B
        x0, x1, x2, y0, y1, y2, z0, z1, z2 = (c.index_select(0, instance) for c in (x0, x1, x2, y0, y1, y2, z0, z1, z2))
    c0 = torch.ceil(torch.minimum(torch.minimum(x0, x1), x2).sub_(0.5)).clamp_(min=0)
    c1 = torch.floor(torch.maximum(torch.maximum(x0, x1), x2).sub_(0.5)).clamp_(max=width - 1)
    r0 = torch.ceil(torch.minimum(torch.minimum(y0, y1), y2).sub_(0.5)).clamp_(min=0)
    r1 = torch.floor(torch.maximum(torch.maximum(y0, y1), y2).sub_(0.5)).clamp_(max=height - 1)
    # Vertex positions relative to the centre of the box's first pixel.
    cx, cy = c0 + 0.5, r0 + 0.5
    x0, x1, x2, y0, y1, y2 = x0 - cx, x1 - cx, x2 - cx, y0 - cy, y1 - cy, y2 - cy
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)                          # (L,), signed
    z_min = torch.minimum(torch.minimum(z0, z1), z2)
    valid = (z_min > near) & (area != 0) & torch.isfinite(area)                  # (empty boxes: counts 0)
    if perspective_correct:
        z0, z1, z2 = 1.0 / z0, 1.0 / z1, 1.0 / z2
    # w_k(p) = A_k * px + B_k * py + C_k with p relative to the box corner; from the edge
    # function w0 = ((x1 - px)(y2 - py) - (x2 - px)(y1 - py)) / area and its rotations.
    inv_area = 1.0 / area                         # (the coefficients of dropped faces are never read)
    coef = planes.new_empty((13, area.shape[0]))
    for out, value in zip((0, 1, 2, 4, 5, 6, 8, 9, 10),
                          (y1 - y2, y2 - y0, y0 - y1, x2 - x1, x0 - x2, x1 - x0,
                           x1 * y2 - x2 * y1, x2 * y0 - x0 * y2, x0 * y1 - x1 * y0)):
        torch.mul(value, inv_area, out=coef[out])
    for j in (0, 4, 8):                                                          # the depth's coefficients
        torch.add(coef[j] * z0 + coef[j + 1] * z1, coef[j + 2] * z2, out=coef[j + 3])
    n_cols = torch.sub(c1, c0, out=coef[12]).add_(1)
    # pixels per box: 0 for an empty box (size <= 0), a dropped face, or NaN vertices
    counts = n_cols.clamp(min=0).mul_((r1 - r0 + 1).clamp_(min=0)).mul_(valid.to(n_cols.dtype))
    counts = counts.nan_to_num_(0.0).long()
    if instance is None:
        face = torch.arange(n_faces, device=planes.device).repeat_interleave(batch)
        image = torch.arange(batch, device=planes.device).repeat(n_faces)
    else:
        face = torch.div(instance, batch, rounding_mode="floor")
        image = instance - face * batch
    base = (image * height + r0.long()) * width + c0.long()
    return coef, counts, base, face


def ragged(counts: torch.Tensor, total: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Enumerate ``counts[i]`` items for every owner ``i``.

    Args:
        counts: (n,) long, items per owner; total: ``counts.sum()`` when the caller knows it.
    Returns:
        (owner, offset), each (total,) long: the owner of every item and its index within
        the owner. ``owner`` is ``repeat_interleave(arange(n), counts)``, computed as the
        cumulative sum of the number of segments ending at each position (about three
        times as fast on the CPU).
    """
    total = int(counts.sum()) if total is None else total
    owner = torch.cumsum(torch.bincount(torch.cumsum(counts, 0), minlength=total + 1)[:total], 0)
    start = torch.cumsum(counts, 0).sub_(counts)
    return owner, torch.arange(total, device=counts.device).sub_(start.index_select(0, owner))


def nearest_faces(planes: torch.Tensor, faces: torch.Tensor, height: int, width: int, *,
                   perspective_correct: bool, near: float, max_candidates: int,
                   cull_backfaces: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The nearest face at every pixel (no autograd).

    Candidates (face, pixel in its box) are enumerated for the whole batch at once; each
    costs one gather of 13 coefficients and three multiply-adds, all on contiguous (N,)
    planes. The position inside the box comes from a float division (exact for boxes of
    fewer than 2**22 pixels), several times faster than an integer one.

    Args:
        planes: (3, V, B) contiguous screen coordinates (column, row, depth), batch fastest.
        faces: (F, 3) long.
        height, width: the image size.
        perspective_correct: compare depths interpolated as ``1/z`` (affine in screen space).
        near: faces with a vertex at depth <= near are dropped, and so are pixels whose
            interpolated depth is not beyond it.
        max_candidates: raise beyond this many (face, pixel) candidates.
        cull_backfaces: (F,) outward orientation to drop the faces seen from behind (see
            :func:`nemopose.render.rasterize`), or None.
    Returns:
        covered: (M,) long, ascending flat indices (into B * H * W) of the covered pixels;
        face: (M,) long, the nearest face at each.
    """
    batch, n_faces = planes.shape[2], faces.shape[0]
    coef, counts, base, face_of = _face_table(planes, faces, height, width, perspective_correct=perspective_correct,
                                              near=near, cull_backfaces=cull_backfaces)
    total = int(counts.sum())
    if total > max_candidates:
        raise ValueError(f"rasterize: {total} (face, pixel) candidates exceed max_candidates="
                         f"{max_candidates}; are faces very close to the camera?")
    owner, offset = ragged(counts, total)                                        # (N,) face instance, pixel in its box
    # gather with an expanded index: about three times as fast as index_select along dim 1
    k = torch.gather(coef, 1, owner.expand(coef.shape[0], -1))                   # (13, N)
    # (dr, dc) = divmod(offset, n_cols) in floating point: offset + 0.5 is at least
    # 0.5 / n_cols away from a multiple of n_cols, far more than the rounding error.
    exact = k.dtype if height * width < 2 ** 22 else torch.float64
    off, n_cols = offset.to(exact), k[12].to(exact)
    dr = torch.floor((off + 0.5).div_(n_cols))
    dc = off.sub_(dr * n_cols)
    pix = base.index_select(0, owner).add_(dr.long() * width).add_(dc.long())    # (N,)
    dr, dc = dr.to(k.dtype), dc.to(k.dtype)
    w = [(k[j] * dc).add_(k[j + 4] * dr).add_(k[j + 8]) for j in range(4)]       # 4 x (N,)
    z = 1.0 / w[3] if perspective_correct else w[3]
    keep = (torch.minimum(torch.minimum(w[0], w[1]), w[2]) >= 0) & (z > near)
    face = face_of.index_select(0, owner)
    return _depth_test(pix, z, keep, face, batch * height * width, n_faces, near)


def _depth_test(pix: torch.Tensor, z: torch.Tensor, keep: torch.Tensor, face_id: torch.Tensor,
                n_pix: int, n_faces: int, near: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest face per pixel among candidates: minimum depth, then the lowest face index.

    Args:
        pix, z, keep, face_id: (N,) flat pixel index, depth, inside test, face of each candidate.
    Returns:
        covered: (M,) long, ascending flat indices of the pixels with a kept candidate;
        face: (M,) long, the nearest face there.

    In float32 with positive depths (``near >= 0``) the depth's bit pattern orders like the
    depth, so ``(bits << 32) | face`` orders like (depth, face) and one ``scatter_reduce``
    (minimum) over the packed keys does the whole test. Otherwise two passes: minimum
    depth, then the lowest face index among the candidates at that depth.
    """
    device = z.device
    if z.dtype == torch.float32 and near >= 0:
        key = (z.view(torch.int32).long() << _FACE_BITS) | face_id
        # dropped candidates get the empty key (kept keys are >= 0: their depth is positive);
        # this arithmetic is several times faster than torch.where on a random mask
        torch.maximum(key, keep.logical_not().long().mul_(_EMPTY), out=key)
        best = torch.full((n_pix,), _EMPTY, dtype=torch.long, device=device)
        best.scatter_reduce_(0, pix, key, reduce="amin")
        covered = torch.nonzero(best != _EMPTY).squeeze(1)
        return covered, best.index_select(0, covered) & ((1 << _FACE_BITS) - 1)
    idx = torch.nonzero(keep).squeeze(1)
    pix, z, face_id = pix.index_select(0, idx), z.index_select(0, idx), face_id.index_select(0, idx)
    zbuf = torch.full((n_pix,), math.inf, dtype=z.dtype, device=device)
    zbuf.scatter_reduce_(0, pix, z, reduce="amin")
    nearest = torch.nonzero(z == zbuf.index_select(0, pix)).squeeze(1)
    winner = torch.full((n_pix,), n_faces, dtype=torch.long, device=device)
    winner.scatter_reduce_(0, pix.index_select(0, nearest), face_id.index_select(0, nearest), reduce="amin")
    covered = torch.nonzero(winner < n_faces).squeeze(1)
    return covered, winner.index_select(0, covered)
