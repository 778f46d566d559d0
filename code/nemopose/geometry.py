"""The one camera model of the project (METHOD.md §3).

PASCAL3D+ describes a view by azimuth ``a``, elevation ``e``, in-plane rotation ``theta``,
distance ``d``, focal ``f``, viewport ``M`` and principal point ``(px, py)``. The same camera
serves the dataset annotations (focal length ``M * f`` in original-image pixels) and the
pose solver's renderer (focal length ``(S / 2) / tan(6 deg)`` in feature-map pixels).

Conventions:
- World frame: the CAD frame, z up. Angles in radians.
- Camera centre ``C = d * (cos e sin a, -cos e cos a, sin e)``.
- World-to-camera rotation ``R = Rz(theta) @ Rx(-(pi/2 - e)) @ Rz(-a)``; the camera looks
  down its -z axis, x to the right, y up.
- Screen coordinates: ``col = f * x_c / (-z_c) + px``, ``row = -f * y_c / (-z_c) + py``,
  depth ``= -z_c`` (positive in front of the camera).

Distance has two units, and the names say which one a value is in:

- PASCAL3D+ distance (``pascal_distance``): the annotation's ``distance``, for the camera of
  the original image (focal length ``M * f`` original-image pixels);
- render distance (``render_distance``): the pose solver's camera distance, for the render
  camera of the feature map. A crop rescales the image by ``r`` (METHOD.md §6.1), so the same object
  appears at the same size when ``render = pascal * 8 * f_r / (M * f * r)``
  (:func:`render_distance`, :func:`pascal_distance`); for the prepared crops ``r = s * d / 5``
  and every object lands at one render distance per category (car: 5.33 at scale 1).

Every function is batched and differentiable in torch (leading dimensions broadcast).
Functions that take NumPy arrays or floats return NumPy arrays (computed in float64).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import numpy as np
import torch

from .constants import DOWNSAMPLE_RATE, PASCAL_FOCAL, PASCAL_VIEWPORT, RENDER_FOV_DEGREES

_WORLD_UP = (0.0, 0.0, 1.0)


# ----------------------------------------------------------------------------- helpers


def _numpy_in_numpy_out(fn: Callable) -> Callable:
    """Run ``fn`` in torch float64 when no argument is a tensor; return NumPy then."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        values = list(args) + list(kwargs.values())
        if any(isinstance(v, torch.Tensor) for v in values):
            return fn(*args, **kwargs)

        def conv(v: Any) -> Any:
            if isinstance(v, (np.ndarray, float, int, np.floating, np.integer)) and not isinstance(v, bool):
                return torch.as_tensor(np.asarray(v, dtype=np.float64))
            if isinstance(v, (tuple, list)) and v and all(isinstance(x, (float, int, np.floating, np.integer)) for x in v):
                return torch.as_tensor(np.asarray(v, dtype=np.float64))
            return v

        out = fn(*[conv(a) for a in args], **{k: conv(v) for k, v in kwargs.items()})
        if isinstance(out, tuple):
            return tuple(o.numpy() if isinstance(o, torch.Tensor) else o for o in out)
        return out.numpy() if isinstance(out, torch.Tensor) else out

    return wrapper


def _as_tensor(x: Any, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    dtype = like.dtype if like is not None else torch.float64
    device = like.device if like is not None else None
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def rot_z(phi: torch.Tensor) -> torch.Tensor:
    """Right-handed rotation about z: ``[[c, -s, 0], [s, c, 0], [0, 0, 1]]``, shape (..., 3, 3)."""
    c, s = torch.cos(phi), torch.sin(phi)
    o, z = torch.ones_like(phi), torch.zeros_like(phi)
    return torch.stack([c, -s, z, s, c, z, z, z, o], dim=-1).reshape(*phi.shape, 3, 3)


def rot_x(phi: torch.Tensor) -> torch.Tensor:
    """Right-handed rotation about x: ``[[1, 0, 0], [0, c, -s], [0, s, c]]``, shape (..., 3, 3)."""
    c, s = torch.cos(phi), torch.sin(phi)
    o, z = torch.ones_like(phi), torch.zeros_like(phi)
    return torch.stack([o, z, z, z, c, -s, z, s, c], dim=-1).reshape(*phi.shape, 3, 3)


def original_zero_distance(distance: torch.Tensor) -> torch.Tensor:
    """Quirk kept from the original: a distance of exactly 0 (coarse-only annotations) is
    replaced by 0.1 before building the camera."""
    return torch.where(distance == 0, torch.full_like(distance, 0.1), distance)


# ----------------------------------------------------------------------------- camera pose


@_numpy_in_numpy_out
def camera_center(azimuth, elevation, distance) -> torch.Tensor:
    """Camera centre in the world frame.

    Args:
        azimuth, elevation, distance: broadcastable tensors (...,); radians.
    Returns:
        (..., 3) tensor ``d * (cos e sin a, -cos e cos a, sin e)``.
    """
    azimuth, elevation, distance = torch.broadcast_tensors(
        azimuth, _as_tensor(elevation, azimuth), _as_tensor(distance, azimuth))
    ce = torch.cos(elevation)
    return torch.stack([distance * ce * torch.sin(azimuth),
                        -distance * ce * torch.cos(azimuth),
                        distance * torch.sin(elevation)], dim=-1)


@_numpy_in_numpy_out
def camera_angles(center) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`camera_center`.

    Args:
        center: (..., 3) camera centres.
    Returns:
        azimuth in [0, 2 pi), elevation in [-pi/2, pi/2], distance; each (...,).
    """
    distance = torch.linalg.vector_norm(center, dim=-1)
    elevation = torch.asin(torch.clamp(center[..., 2] / distance, -1.0, 1.0))
    azimuth = torch.remainder(torch.atan2(center[..., 0], -center[..., 1]), 2 * math.pi)
    # remainder(-tiny, 2 pi) rounds to exactly 2 pi; keep the half-open range [0, 2 pi).
    azimuth = torch.where(azimuth >= 2 * math.pi, azimuth - 2 * math.pi, azimuth)
    return azimuth, elevation, distance


@_numpy_in_numpy_out
def look_at_rotation(center) -> torch.Tensor:
    """World-to-camera rotation of a camera at ``center`` looking at the origin, world z up.

    Rows are the camera axes in world coordinates: z = C / |C| (the camera looks down -z),
    x = normalise(up x z), y = z x x. For ``C = camera_center(a, e, d)`` this equals
    ``Rx(-(pi/2 - e)) @ Rz(-a)`` (see :func:`rotation_from_angles`).

    Args:
        center: (..., 3).
    Returns:
        (..., 3, 3).
    """
    z_axis = center / torch.linalg.vector_norm(center, dim=-1, keepdim=True)
    # up x z for up = _WORLD_UP = (0, 0, 1) is (-z_y, z_x, 0): the same numbers and gradients
    # as torch.linalg.cross with an up tensor, and no tensor made from host data (on a GPU a
    # blocking copy in every solver step).
    x_axis = torch.stack([-z_axis[..., 1], z_axis[..., 0], torch.zeros_like(z_axis[..., 0])], dim=-1)
    x_axis = x_axis / torch.linalg.vector_norm(x_axis, dim=-1, keepdim=True)
    y_axis = torch.linalg.cross(z_axis, x_axis, dim=-1)
    return torch.stack([x_axis, y_axis, z_axis], dim=-2)


@_numpy_in_numpy_out
def rotation_from_angles(azimuth, elevation) -> torch.Tensor:
    """``R(a, e) = Rx(-(pi/2 - e)) @ Rz(-a)``, the spec's world-to-camera rotation, (..., 3, 3)."""
    azimuth, elevation = torch.broadcast_tensors(azimuth, _as_tensor(elevation, azimuth))
    return rot_x(-(math.pi / 2 - elevation)) @ rot_z(-azimuth)


@_numpy_in_numpy_out
def rotation_matrix(theta, elevation, azimuth) -> torch.Tensor:
    """Rotation used for evaluation: ``Rz(theta) @ R(azimuth, elevation)``, (..., 3, 3).

    The argument order (theta, elevation, azimuth) follows the original's
    ``cal_rotation_matrix``.
    """
    theta, elevation, azimuth = torch.broadcast_tensors(
        theta, _as_tensor(elevation, theta), _as_tensor(azimuth, theta))
    return rot_z(theta) @ rotation_from_angles(azimuth, elevation)


@_numpy_in_numpy_out
def camera_rotation(center, theta) -> torch.Tensor:
    """Full world-to-camera rotation ``Rz(theta) @ look_at_rotation(center)``, (..., 3, 3)."""
    theta = _as_tensor(theta, center)
    return rot_z(theta) @ look_at_rotation(center)


# ----------------------------------------------------------------------------- projection


@_numpy_in_numpy_out
def project_to_screen(points, center, theta, focal, principal) -> torch.Tensor:
    """Project world points with a camera at ``center`` (looking at the origin).

    Args:
        points: (..., N, 3) world points (broadcast against the camera batch).
        center: (..., 3) camera centres.
        theta: (...,) in-plane rotations.
        focal: focal length in pixels (scalar or (...,)).
        principal: (..., 2) principal point (x = column, y = row) in pixels.
    Returns:
        (..., N, 3): column, row, depth (depth = distance along the viewing axis, > 0 in
        front of the camera).
    """
    center = _as_tensor(center)
    points = _as_tensor(points, center)
    theta = _as_tensor(theta, center)
    focal = _as_tensor(focal, center)
    principal = _as_tensor(principal, center)
    rotation = camera_rotation(center, theta)                       # (..., 3, 3)
    cam = (points - center.unsqueeze(-2)) @ rotation.transpose(-1, -2)  # (..., N, 3)
    depth = -cam[..., 2]
    scale = focal.unsqueeze(-1) / depth if focal.dim() else focal / depth  # (..., N)
    col = cam[..., 0] * scale + principal[..., 0].unsqueeze(-1)
    row = -cam[..., 1] * scale + principal[..., 1].unsqueeze(-1)
    return torch.stack([col, row, depth], dim=-1)


def project_to_screen_planes(points: torch.Tensor, center: torch.Tensor, theta: torch.Tensor, focal: float,
                             principal: torch.Tensor | tuple[float, float]) -> torch.Tensor:
    """:func:`project_to_screen` of one point set for B cameras, as coordinate planes.

    The same camera (the same numbers up to float rounding), laid out for the rasteriser:
    one contiguous (B, N) plane per coordinate. Computed with broadcast (B, N) operations,
    several times faster than B tiny (N, 3) @ (3, 3) products; every camera's numbers, and
    their gradients (reductions along each camera's row), are the same whatever the batch.

    Args:
        points: (N, 3) world points; center: (B, 3); theta: (B,); focal: pixels;
        principal: (B, 2) principal points (x = column, y = row), or one (x, y) pair of
            numbers for all cameras (no tensor made from host data).
    Returns:
        (3, B, N): column, row, depth planes.
    """
    rotation = camera_rotation(center, theta).unsqueeze(-1)                     # (B, 3, 3, 1)
    rel = [p - c.unsqueeze(1) for p, c in zip(points.t(), center.t())]          # 3 x (B, N): points - C
    x, y, z = (rel[0] * r[:, 0] + rel[1] * r[:, 1] + rel[2] * r[:, 2] for r in rotation.unbind(1))
    depth = -z
    scale = focal / depth
    if isinstance(principal, torch.Tensor):
        principal_x, principal_y = principal[:, :1], principal[:, 1:]
    else:
        principal_x, principal_y = (float(v) for v in principal)
    col = x * scale + principal_x
    row = -y * scale + principal_y
    return torch.stack([col, row, depth])


@_numpy_in_numpy_out
def project_points(points, azimuth, elevation, theta, distance, focal=PASCAL_FOCAL,
                   principal=(0.0, 0.0), viewport=PASCAL_VIEWPORT) -> torch.Tensor:
    """PASCAL3D+ projection of world points into the original image.

    Args:
        points: (N, 3) or (..., N, 3) CAD-frame points.
        azimuth, elevation, theta, distance: (...,) viewpoint (radians); distance 0 is
            replaced by 0.1 (the original's quirk).
        focal, viewport: the focal length in pixels is ``viewport * focal``.
        principal: (..., 2) principal point (px, py) in pixels.
    Returns:
        (..., N, 2) pixel coordinates, x = column, y = row.
    """
    azimuth = _as_tensor(azimuth)
    distance = original_zero_distance(_as_tensor(distance, azimuth))
    center = camera_center(azimuth, _as_tensor(elevation, azimuth), distance)
    focal_px = _as_tensor(viewport, azimuth) * _as_tensor(focal, azimuth)
    screen = project_to_screen(points, center, _as_tensor(theta, azimuth), focal_px,
                               _as_tensor(principal, azimuth))
    return screen[..., :2]


def render_focal_length(render_size: int, fov_degrees: float = RENDER_FOV_DEGREES) -> float:
    """Focal length in pixels of the pose solver's camera: ``(S / 2) / tan(fov / 2)``."""
    return (render_size / 2.0) / math.tan(math.radians(fov_degrees) / 2.0)


# ----------------------------------------------------------------------------- distance units


def _render_per_pascal(resize_rate, map_size: tuple[int, int], viewport: float, focal: float):
    """``8 f_r / (M f r)``: render distance per unit of PASCAL3D+ distance."""
    focal_render = render_focal_length(max(int(map_size[0]), int(map_size[1])))
    return DOWNSAMPLE_RATE * focal_render / (viewport * focal * resize_rate)


def render_distance(pascal_distance, resize_rate, map_size: tuple[int, int], *,
                    viewport: float = PASCAL_VIEWPORT, focal: float = PASCAL_FOCAL):
    """PASCAL3D+ distance -> the render camera's distance at which the object appears in the
    crop at the same size (module docstring).

    Args:
        pascal_distance: distance of the original image's camera (floats, arrays or tensors).
        resize_rate: ``r``, crop pixels per original-image pixel (the annotation's
            ``resize_rate``; for an unlabeled image, the scale that fitted it into the crop).
        map_size: (h, w) of the feature map the render camera draws.
        viewport, focal: the original camera's ``M`` and ``f``.
    """
    return pascal_distance * _render_per_pascal(resize_rate, map_size, viewport, focal)


def pascal_distance(render_distance, resize_rate, map_size: tuple[int, int], *,
                    viewport: float = PASCAL_VIEWPORT, focal: float = PASCAL_FOCAL):
    """Inverse of :func:`render_distance`: the pose solver's distance in PASCAL3D+ units."""
    return render_distance / _render_per_pascal(resize_rate, map_size, viewport, focal)


# ----------------------------------------------------------------------------- evaluation


@_numpy_in_numpy_out
def rotation_error(R1, R2) -> torch.Tensor:
    """Geodesic angle between rotations, in radians, (...,).

    Equal to ``||logm(R1^T R2)||_F / sqrt(2)``, computed as the angle of ``R1^T R2`` from
    its trace and skew part (robust near 0 and pi). NaN or inf anywhere in either matrix
    gives pi/2 (the original's convention).
    """
    R2 = _as_tensor(R2, R1)
    rel = R1.transpose(-1, -2) @ R2
    cos = (rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    skew = torch.stack([rel[..., 2, 1] - rel[..., 1, 2],
                        rel[..., 0, 2] - rel[..., 2, 0],
                        rel[..., 1, 0] - rel[..., 0, 1]], dim=-1)
    sin = torch.linalg.vector_norm(skew, dim=-1) / 2.0
    angle = torch.atan2(sin, cos)
    bad = ~(torch.isfinite(R1).flatten(-2).all(-1) & torch.isfinite(R2).flatten(-2).all(-1))
    return torch.where(bad, torch.full_like(angle, math.pi / 2), angle)


def pose_error(pred: dict, gt: dict) -> np.ndarray:
    """Rotation error between predicted and annotated poses (dicts of azimuth, elevation,
    theta arrays), in radians."""
    r_pred = rotation_matrix(np.asarray(pred["theta"], np.float64), np.asarray(pred["elevation"], np.float64),
                             np.asarray(pred["azimuth"], np.float64))
    r_gt = rotation_matrix(np.asarray(gt["theta"], np.float64), np.asarray(gt["elevation"], np.float64),
                           np.asarray(gt["azimuth"], np.float64))
    return rotation_error(r_gt, r_pred)
