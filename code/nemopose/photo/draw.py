"""Pictures of photo predictions at the photo's own resolution: each object's box and its
mesh at the predicted pose, coloured by the no-object answer (green: found, red: not
found, cyan: no calibration), with a label (angles in degrees, presence score)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..tools.visualize import render_silhouette

MAX_RENDER_SIDE = 1024      # the silhouette is rasterised at most this large, then scaled up
COLOURS = {True: (40, 220, 60), False: (230, 40, 40), None: (0, 220, 255)}


def mesh_mask(verts, faces, pose: tuple[float, float, float, float], image_hw: tuple[int, int],
              shift: tuple[float, float], render_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Silhouette mask and shade (H, W) of the mesh over an image of ``image_hw``: the render
    camera of side ``render_size`` (image pixels) with its principal point ``shift`` pixels
    from the image centre. Large images are rasterised smaller and scaled up."""
    h, w = image_hw
    factor = min(1.0, MAX_RENDER_SIDE / max(h, w))
    small = (max(1, round(h * factor)), max(1, round(w * factor)))
    # the principal point in the small image: same place relative to the image, scaled
    cx, cy = (w / 2 + shift[0]) * small[1] / w, (h / 2 + shift[1]) * small[0] / h
    mask, shade = render_silhouette(verts, faces, pose, small, (cx - small[1] / 2, cy - small[0] / 2),
                                    max(1, round(render_size * factor)))
    if small != (h, w):
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
        shade = np.asarray(Image.fromarray((shade * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)) / 255.0
    return mask, shade


def draw_predictions(image: np.ndarray, predictions: Sequence, meshes: Sequence, crop_render_size: int,
                     alpha: float = 0.4) -> np.ndarray:
    """The image (H, W, 3) uint8 with every prediction's mesh and box drawn over it.

    Args:
        predictions: :class:`nemopose.predict.Prediction` of this image.
        meshes: the predictor's neural meshes (``prediction.mesh`` is 1-based).
        crop_render_size: the render camera's side in crop pixels (``max(crop size)``); in
            the photo it is that over the prediction's scale.
    """
    out = image.astype(np.float64).copy()
    edges = np.zeros(image.shape[:2], bool)
    colours = np.zeros(image.shape, np.float64)
    for p in predictions:
        if p.box is None or not math.isfinite(p.azimuth):
            continue
        mesh = meshes[p.mesh - 1]
        mask, shade = mesh_mask(mesh.verts, mesh.faces, (p.azimuth, p.elevation, p.theta, p.render_distance),
                                image.shape[:2], (p.shift_x, p.shift_y), crop_render_size / p.scale)
        col = np.asarray(COLOURS[p.object_found], np.float64)
        out[mask] = (1 - alpha) * out[mask] + alpha * (0.5 + 0.5 * shade[mask, None]) * col
        edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1))
        edges |= edge
        colours[edge] = col
    out[edges] = colours[edges]
    picture = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    width = max(1, round(max(image.shape[:2]) / 400))
    for p in predictions:
        if p.box is None:
            continue
        col = COLOURS[p.object_found]
        draw.rectangle(p.box, outline=(255, 210, 0), width=width)
        answer = {True: "yes", False: "no", None: "?"}[p.object_found]
        label = (f"az {p.azimuth_deg:.0f} el {p.elevation_deg:.0f} th {p.theta_deg:.0f}  score {p.score:.2f} {answer}"
                 if math.isfinite(p.azimuth) else "no object")
        x, y = p.box[0], max(0.0, p.box[1] - 12)
        draw.rectangle((x, y, x + 6 * len(label) + 4, y + 11), fill=(0, 0, 0))
        draw.text((x + 2, y), label, fill=col)
    return np.asarray(picture)
