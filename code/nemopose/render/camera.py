"""The pose solver's pinhole camera: a field of view over a square render, centre-cropped.

:class:`RenderCamera` holds the intrinsics; :func:`project_vertices` maps CAD-frame vertices
to screen coordinates for a batch of poses through :mod:`nemopose.geometry` (the one camera
model), in the layouts the rasteriser takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import geometry
from ..constants import RENDER_FOV_DEGREES

__all__ = ["RenderCamera", "project_vertices"]


@dataclass(frozen=True)
class RenderCamera:
    """The pose solver's camera (METHOD.md §3, "Rendering camera").

    A pinhole with field of view ``fov_degrees`` over a square render of side
    ``render_size`` (S), principal point at the centre of that square, then centre-cropped
    to ``image_size``. Rendering directly at ``image_size`` with the principal point at
    its centre gives the same map, which is what we do.

    Attributes:
        image_size: (h, w) of the output map.
        render_size: S; defaults to ``max(h, w)``.
        fov_degrees: 12 in NeMo (:data:`nemopose.constants.RENDER_FOV_DEGREES`).
    """

    image_size: tuple[int, int]
    render_size: int | None = None
    fov_degrees: float = RENDER_FOV_DEGREES

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
                     camera: RenderCamera, *, planar: bool = False, shift: torch.Tensor | None = None) -> torch.Tensor:
    """Project CAD-frame vertices for a batch of camera poses.

    Args:
        verts: (V, 3) or (B, V, 3) world (CAD frame, z up) vertices ((V, 3) with ``planar``).
        center: (B, 3) camera centres; theta: (B,) in-plane rotations.
        planar: return (3, B, V) coordinate planes instead
            (:func:`nemopose.geometry.project_to_screen_planes`), the layout
            :func:`rasterize_covered` works on.
        shift: optional (B, 2) shift of the principal point in pixels (x = column, y = row).
    Returns:
        (B, V, 3) screen vertices (column, row, depth) for :func:`rasterize`, or (3, B, V).
    """
    if center.dim() != 2 or center.shape[-1] != 3:
        raise ValueError(f"center must be (B, 3), got {tuple(center.shape)}")
    theta = theta.reshape(-1).to(center)
    if theta.shape[0] != center.shape[0]:
        raise ValueError(f"theta must be (B,) with B={center.shape[0]}, got {tuple(theta.shape)}")
    # The principal point enters as Python numbers, never as a tensor made from them: on a GPU
    # that would be a blocking host-to-device copy in every solver step (and no CUDA graph).
    px, py = camera.principal
    if shift is not None:
        principal = torch.stack([shift[:, 0] + px, shift[:, 1] + py], 1)
    elif planar:
        principal = (px, py)
    else:
        principal = torch.stack([torch.full_like(theta, px), torch.full_like(theta, py)], 1)
    if planar:
        return geometry.project_to_screen_planes(verts.to(center), center, theta, camera.focal, principal)
    return geometry.project_to_screen(verts.to(center), center, theta, camera.focal, principal)
