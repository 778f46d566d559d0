"""Images of the synthetic PASCAL3D+ (METHOD.md §14): appearance, viewpoints, rendering, keypoint
visibility and occluders.

- Appearance: the colour of a surface point is fixed by the direction its outward normal
  faces (6 classes: +-x, +-y, +-z, each a distinct colour pair), blended along the surface
  with a gradient and overlaid with a class-specific pattern (checks, stripes): every side
  differs, so no symmetry hides the azimuth, and position on a side is visible too. Mild
  head-light shading. Backgrounds: smooth colour fields, random shapes, striped patches.
- Viewpoints like PASCAL3D+'s (azimuth uniform; elevation mostly -10..40 deg; theta ~
  N(0, 4 deg); elevation and theta re-drawn until the object fits the category's crop;
  distance set so the object spans 40-80 % of the image), focal 1, viewport 3000, the
  principal point placed so the object is fully inside and near the centre.
- Keypoints: status 1 when the z-buffer sees the anchor, 2 when hidden, 0 when outside.
- Occluders: textured random shapes pasted over the object until 20-40 / 40-60 / 60-80 %
  of its pixels are covered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from .. import constants, geometry
from ..render import raster as render
from .synthetic_cad import CadModel

VIEWPORT = constants.PASCAL_VIEWPORT
FOCAL = constants.PASCAL_FOCAL


# ----------------------------------------------------------------------------- appearance

# Per normal class (+x, -x, +y, -y, +z, -z): two colours blended along the surface, and a
# pattern. Saturated and pairwise distinct, so every side of an object is recognisable.
_CLASS_COLOURS = np.array([
    [[0.85, 0.15, 0.10], [0.95, 0.55, 0.10]],   # +x (right): red -> orange
    [[0.10, 0.55, 0.15], [0.55, 0.85, 0.20]],   # -x (left): green -> lime
    [[0.10, 0.20, 0.85], [0.15, 0.65, 0.95]],   # +y (front): blue -> sky
    [[0.90, 0.80, 0.10], [0.60, 0.40, 0.05]],   # -y (back): yellow -> brown
    [[0.80, 0.20, 0.75], [0.95, 0.75, 0.90]],   # +z (top): magenta -> pink
    [[0.15, 0.15, 0.20], [0.45, 0.45, 0.55]],   # -z (bottom): dark -> grey
])


def _normal_class(normals: np.ndarray) -> np.ndarray:
    """(F,) class 0..5 of the dominant axis and sign of each normal."""
    axis = np.abs(normals).argmax(1)
    sign = normals[np.arange(len(normals)), axis] < 0
    return axis * 2 + sign


def shade_object(points: np.ndarray, normals: np.ndarray, classes: np.ndarray, view_dir: np.ndarray,
                 box_lo: np.ndarray, box_hi: np.ndarray) -> np.ndarray:
    """Colours (N, 3) in [0, 1] of surface points.

    Args:
        points: (N, 3) CAD-frame points; normals: (N, 3) outward; classes: (N,) 0..5;
        view_dir: (N, 3) unit vectors from the point to the camera;
        box_lo, box_hi: the model's box (texture coordinates).
    """
    axis = classes // 2
    uvw = (points - box_lo) / np.maximum(box_hi - box_lo, 1e-6)                  # (N, 3) in [0, 1]
    u_axis, v_axis = (axis + 1) % 3, (axis + 2) % 3
    u = uvw[np.arange(len(points)), u_axis]
    v = uvw[np.arange(len(points)), v_axis]
    pair = _CLASS_COLOURS[classes]                                               # (N, 2, 3)
    colour = pair[:, 0] * (1 - u)[:, None] + pair[:, 1] * u[:, None]
    pattern = np.where(classes % 3 == 0, ((np.floor(u * 6) + np.floor(v * 6)) % 2),
                       np.where(classes % 3 == 1, (np.floor(v * 8) % 2), (np.floor((u + v) * 5) % 2)))
    colour = colour * (0.72 + 0.28 * pattern)[:, None]
    light = 0.6 + 0.4 * np.abs((normals * view_dir).sum(1))
    return np.clip(colour * light[:, None], 0, 1)


def clutter_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float in [0, 1]: a smooth colour field under random shapes and stripes."""
    grid = rng.uniform(0.1, 0.9, size=(1, 3, rng.integers(3, 7), rng.integers(3, 7)))
    grey = grid.mean(1, keepdims=True)
    grid = 0.5 * grid + 0.5 * grey                                               # muted colours
    base = torch.nn.functional.interpolate(torch.from_numpy(grid).float(), size=(height, width), mode="bilinear",
                                           align_corners=False)[0].permute(1, 2, 0).numpy()
    img = Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img, "RGBA")
    scale = min(height, width)
    for _ in range(int(rng.integers(18, 36))):
        rgb = rng.integers(20, 235, size=3)
        rgb = 0.65 * rgb + 0.35 * rgb.mean()                                     # a little muted
        colour = tuple(int(c) for c in rgb) + (int(rng.integers(120, 256)),)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.03, 0.25) * scale
        kind = rng.integers(4)
        if kind == 0:
            draw.rectangle([cx - r, cy - r * rng.uniform(0.3, 1.5), cx + r, cy + r], fill=colour)
        elif kind == 1:
            draw.ellipse([cx - r, cy - r * rng.uniform(0.4, 1.2), cx + r, cy + r], fill=colour)
        elif kind == 2:
            pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in np.sort(rng.uniform(0, 2 * math.pi, 5))]
            draw.polygon(pts, fill=colour)
        else:
            draw.line([cx - r, cy - r, cx + r, cy + rng.uniform(-r, r)], fill=colour,
                      width=int(max(1, rng.uniform(0.005, 0.03) * scale)))
    out = np.asarray(img).astype(np.float32) / 255
    # A few striped disks (texture-like clutter), computed on their bounding boxes only.
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        rad = rng.uniform(0.1, 0.3) * scale
        ang = rng.uniform(0, math.pi)
        period = rng.uniform(4, 14)
        colour = rng.uniform(0.1, 0.9, size=3).astype(np.float32)
        r0, r1 = max(int(cy - rad), 0), min(int(cy + rad) + 1, height)
        c0, c1 = max(int(cx - rad), 0), min(int(cx + rad) + 1, width)
        if r1 <= r0 or c1 <= c0:
            continue
        rows, cols = np.mgrid[r0:r1, c0:c1].astype(np.float32)
        inside = (rows - cy) ** 2 + (cols - cx) ** 2 < rad ** 2
        stripes = np.sin((cols * math.cos(ang) + rows * math.sin(ang)) * (2 * math.pi / period)) > 0
        patch = out[r0:r1, c0:c1]
        sel = inside & stripes
        patch[sel] = 0.5 * patch[sel] + 0.5 * colour
    return out


def occluder_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float: a random colour with stripes or checks (the occluders' look)."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    c1, c2 = rng.uniform(0.05, 0.95, size=3), rng.uniform(0.05, 0.95, size=3)
    period = rng.uniform(5, 20)
    if rng.random() < 0.5:
        ang = rng.uniform(0, math.pi)
        t = np.sin((cols * math.cos(ang) + rows * math.sin(ang)) * 2 * math.pi / period) > 0
    else:
        t = ((cols // period) + (rows // period)) % 2 > 0
    return np.where(t[..., None], c1, c2).astype(np.float32)


# ----------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Rendered:
    """One rendered object: colour (H, W, 3) in [0, 1], mask (H, W) bool, depth (H, W)
    (0 off the object), and the screen-space vertices (V, 3) (col, row, depth)."""

    colour: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    screen: np.ndarray


def render_object(model: CadModel, azimuth: float, elevation: float, theta: float, distance: float,
                  principal: tuple[float, float], image_hw: tuple[int, int]) -> Rendered:
    """Render a CAD model with the PASCAL3D+ camera (focal 1, viewport 3000)."""
    center = geometry.camera_center(azimuth, elevation, distance)
    screen = geometry.project_to_screen(model.verts, center, theta, VIEWPORT * FOCAL, np.asarray(principal))
    frags = render.rasterize(torch.from_numpy(screen)[None].float(), torch.from_numpy(model.faces), image_hw)
    p2f = frags.pix_to_face[0].numpy()
    mask = p2f >= 0
    face = p2f[mask]
    bary = frags.bary[0].numpy()[mask].astype(np.float64)                         # (N, 3)
    points = (model.verts[model.faces[face]] * bary[..., None]).sum(1)           # (N, 3)
    normals = model.face_normal[face]
    view = center[None] - points
    view /= np.linalg.norm(view, axis=1, keepdims=True)
    classes = _normal_class(normals)
    colour = np.zeros(tuple(image_hw) + (3,), dtype=np.float32)
    colour[mask] = shade_object(points, normals, classes, view, model.verts.min(0), model.verts.max(0))
    return Rendered(colour, mask, frags.depth[0].numpy(), screen)


@dataclass(frozen=True)
class View:
    """A sampled viewpoint (angles in radians) and image size."""

    azimuth: float
    elevation: float
    theta: float
    distance: float
    px: float
    py: float
    height: int
    width: int


CROP_FILL = 0.95  # a view is kept when the object spans at most this much of the crop


def crop_fill(model: CadModel, category: str, azimuth: float, elevation: float, theta: float) -> float:
    """How much of the category's crop the object spans, seen from this view: the largest
    |offset| of a vertex from the principal point at the crops' normalised scale
    (distance 5), over half the crop side (> 1: the crop cuts the object)."""
    xy = geometry.project_points(model.verts, azimuth, elevation, theta, constants.OBJECT_NORMALIZE_DISTANCE,
                                 FOCAL, (0.0, 0.0), VIEWPORT)
    height, width = constants.image_size(category)
    return float(max(np.abs(xy[:, 0]).max() / (width / 2), np.abs(xy[:, 1]).max() / (height / 2)))


def sample_view(rng: np.random.Generator, model: CadModel, category: str, width_range: tuple[int, int],
                aspect_range: tuple[float, float], object_fraction: tuple[float, float]) -> View:
    """A PASCAL3D+-like viewpoint with the object fully inside the image, near its centre.

    Azimuth uniform; elevation uniform in -10..40 deg (85 %) or -20..65 deg; theta ~ N(0, 4
    deg) clipped to 15 deg. Elevation and theta are re-drawn (up to 30 times, then the best
    is kept) until the object fits the category's crop (:func:`crop_fill` <= CROP_FILL),
    which lowers the elevations of long objects as in real photographs.
    """
    width = int(rng.integers(width_range[0], width_range[1] + 1))
    height = int(round(width * rng.uniform(*aspect_range)))
    azimuth = rng.uniform(0, 2 * math.pi)
    best = None
    for _ in range(30):
        elev_deg = rng.uniform(-10, 40) if rng.random() < 0.85 else rng.uniform(-20, 65)
        theta = math.radians(float(np.clip(rng.normal(0, 4), -15, 15)))
        fill = crop_fill(model, category, azimuth, math.radians(elev_deg), theta)
        if best is None or fill < best[0]:
            best = (fill, math.radians(elev_deg), theta)
        if fill <= CROP_FILL:
            break
    _, elevation, theta = best
    fraction = rng.uniform(*object_fraction)
    # Size at a provisional distance, then the distance that gives the wanted fraction.
    probe = 10.0
    xy = geometry.project_points(model.verts, azimuth, elevation, theta, probe, FOCAL, (0.0, 0.0), VIEWPORT)
    span = xy.max(0) - xy.min(0)
    distance = probe * max(span[0] / (fraction * width), span[1] / (fraction * height))
    xy = geometry.project_points(model.verts, azimuth, elevation, theta, distance, FOCAL, (0.0, 0.0), VIEWPORT)
    lo, hi = xy.min(0), xy.max(0)
    margin = 3.0
    principal = []
    for k, size in enumerate((width, height)):
        a, b = margin - lo[k], size - margin - hi[k]          # principal range keeping the object inside
        mid, half = (a + b) / 2, max(b - a, 0.0) / 2
        principal.append(mid + rng.uniform(-0.5, 0.5) * half)
    return View(azimuth, elevation, theta, distance, principal[0], principal[1], height, width)


def keypoint_status(model: CadModel, view: View, rendered: Rendered) -> tuple[np.ndarray, np.ndarray]:
    """Anchor status (1 visible, 2 hidden by the object, 0 outside the image) and (K, 2)
    (x, y) locations (zero unless visible)."""
    center = geometry.camera_center(view.azimuth, view.elevation, view.distance)
    scr = geometry.project_to_screen(model.anchors, center, view.theta, VIEWPORT * FOCAL,
                                     np.array([view.px, view.py]))
    status = np.zeros(len(scr), dtype=np.int64)
    xy = np.zeros((len(scr), 2))
    tolerance = 0.01 * float(np.linalg.norm(model.verts.max(0) - model.verts.min(0)))
    for k, (x, y, z) in enumerate(scr):
        c, r = int(math.floor(x)), int(math.floor(y))
        if not (0 <= r < view.height and 0 <= c < view.width):
            continue
        front = rendered.depth[r, c] if rendered.mask[r, c] else math.inf
        if z <= front + tolerance:
            status[k], xy[k] = 1, (x, y)
        else:
            status[k] = 2
    return status, xy


# ----------------------------------------------------------------------------- occluders


def paste_occluders(rng: np.random.Generator, image: np.ndarray, object_mask: np.ndarray,
                    coverage: tuple[float, float], tries: int = 40) -> tuple[np.ndarray, np.ndarray, float]:
    """Paste textured random shapes until ``coverage`` (lo, hi) of the object is hidden.

    Args:
        image: (H, W, 3) float in [0, 1]; object_mask: (H, W) bool.
    Returns:
        occluded image, ``occluder_mask`` (H, W) bool, and the covered object fraction.
    """
    height, width = object_mask.shape
    obj_rows, obj_cols = np.nonzero(object_mask)
    n_obj = len(obj_rows)
    lo, hi = coverage
    target = rng.uniform(lo + 0.02, hi - 0.02)
    size = math.sqrt(n_obj)
    best = (None, -1.0)
    for _ in range(tries):
        canvas = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        frac = 0.0
        for _ in range(12):
            k = rng.integers(n_obj)
            cx, cy = obj_cols[k], obj_rows[k]
            need = max(target - frac, 0.05)
            r = size * math.sqrt(need) * rng.uniform(0.45, 0.75)
            kind = rng.integers(3)
            if kind == 0:
                draw.ellipse([cx - r, cy - r * rng.uniform(0.5, 1.3), cx + r, cy + r], fill=255)
            elif kind == 1:
                draw.rectangle([cx - r, cy - r * rng.uniform(0.4, 1.2), cx + r * rng.uniform(0.6, 1.4), cy + r],
                               fill=255)
            else:
                pts = [(cx + r * 1.3 * math.cos(a), cy + r * 1.3 * math.sin(a))
                       for a in np.sort(rng.uniform(0, 2 * math.pi, 6))]
                draw.polygon(pts, fill=255)
            mask = np.asarray(canvas) > 0
            frac = float((mask & object_mask).sum()) / n_obj
            if frac >= target - 0.02:
                break
        if lo <= frac <= hi:
            best = (mask, frac)
            break
        if best[0] is None or abs(frac - (lo + hi) / 2) < abs(best[1] - (lo + hi) / 2):
            best = (mask, frac)
    mask, frac = best
    out = image.copy()
    rows, cols = np.nonzero(mask)
    if len(rows):
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        texture = occluder_texture(rng, r1 - r0, c1 - c0)
        region = out[r0:r1, c0:c1]
        region[mask[r0:r1, c0:c1]] = texture[mask[r0:r1, c0:c1]]
    return out, mask, frac
