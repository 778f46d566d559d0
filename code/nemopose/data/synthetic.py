"""A synthetic PASCAL3D+ in the real release layout and formats (SPEC 14).

Writes, under ``<dataroot>``::

    PASCAL3D+_release1.1/
        SYNTHETIC.json                        marker: this is NOT PASCAL3D+ (config, seed)
        Images/<cat>_imagenet/<id>.JPEG
        Annotations/<cat>_imagenet/<id>.mat   ``record`` structs with the real nesting
        Image_sets/<cat>_imagenet_{train,val,subtype}.txt
        CAD/<cat>/NN.off, CAD/<cat>.mat       procedural CAD models (+ 3D anchors)
    OccludedPASCAL3D/
        SYNTHETIC.json
        images/<cat><LEVEL>/<id>.JPEG, annotations/<cat><LEVEL>/<id>.npz (occluder_mask)

so that the real preparation code (pascal3d, prepare, annotate3d) runs on it unchanged.

Design (what makes the pose learnable and the data honest):

- Objects: per category a few boxes and cylinders with the category's proportions, sized
  like the PASCAL3D+ CAD models (the released cuboids' extents, e.g. car x +-0.18,
  y -0.44..0.43, z -0.17..0.12), so that the crops' r = distance / 5 normalisation and
  the solver's per-category render distances behave as on real data. Each CAD model is
  the base model with its own per-axis scale and part jitter; surfaces are tessellated
  densely (vertex density ~ area) so the cuboid extents (99 % of the vertices) behave.
  Categories whose real extents overflow their crop in typical views are shrunk a little
  (SIZE_FACTOR, 0.7-1).
- Appearance: the colour of a surface point is fixed by the direction its outward
  normal faces (6 classes: +-x, +-y, +-z, each a distinct colour pair), blended along
  the surface with a gradient and overlaid with a class-specific pattern (checks,
  stripes): every side differs, so no symmetry hides the azimuth, and position on a side
  is visible too. Mild head-light shading.
- Images: cluttered backgrounds (smooth colour fields, random shapes, striped patches),
  the object rendered with :func:`nemopose.render.rasterize` at a viewpoint drawn like
  PASCAL3D+'s (azimuth uniform; elevation mostly -10..40 deg; theta ~ N(0, 4 deg);
  elevation and theta re-drawn until the object fits the category's crop, see
  SIZE_FACTOR and sample_view; distance set so the object spans 40-80 % of the image),
  focal 1, viewport 3000, the
  principal point (where the CAD origin projects) placed so the object is fully inside
  and near the centre; Gaussian noise; JPEG.
- Keypoints: one 3D anchor per keypoint name, placed by the tokens of its name
  (left/right -> x, front/back/head/tail -> y, upper/lower/top/bottom -> z) on the model's
  box and snapped to the nearest surface vertex; status 1 when the z-buffer sees it, 2
  when hidden, 0 when outside the image (location stored only for status 1, as real).
- Occluded levels: textured random shapes pasted over the object until 20-40 / 40-60 /
  60-80 % of its pixels are covered; ``occluder_mask`` saved.

Everything is deterministic from the seed: each image has its own random stream derived
from (seed, category, split, index), so a category or an image is the same whichever
subset is generated.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from .. import constants, geometry, mesh, render
from ..utils import atomic_savez, atomic_write_bytes, atomic_write_json, atomic_write_text, setup_logging
from . import layout
from .pascal3d import DATASET, OccludedRelease, Pascal3DRelease

log = logging.getLogger(__name__)

GENERATOR = "nemopose.data.synthetic"
GENERATOR_VERSION = 1
VIEWPORT = 3000.0
FOCAL = 1.0


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. Presets: ``tiny`` (unit tests) and ``demo`` (the CPU demo).

    Attributes:
        size: preset name (recorded in the marker).
        seed: base seed; every image has its own stream derived from it.
        n_train, n_val: images per category and split.
        n_cad: CAD models per category.
        width_range: original image widths (pixels), uniform.
        aspect_range: height / width, uniform.
        object_fraction: the object's bbox spans this fraction of the image (limiting side).
        cad_vertices: approximate vertex count of each procedural CAD model.
        noise_sigma: Gaussian pixel noise (0-255 scale).
        jpeg_quality: of the written images.
        occluded: also write the OccludedPASCAL3D-style levels for the val images.
    """

    size: str = "demo"
    seed: int = 0
    n_train: int = 120
    n_val: int = 40
    n_cad: int = 3
    width_range: tuple[int, int] = (440, 540)
    aspect_range: tuple[float, float] = (0.66, 0.8)
    object_fraction: tuple[float, float] = (0.4, 0.8)
    cad_vertices: int = 2000
    noise_sigma: float = 3.0
    jpeg_quality: int = 92
    occluded: bool = True

    def marker(self) -> dict[str, Any]:
        """The settings that define the data (what a marker must match to reuse it)."""
        out = asdict(self)
        out.pop("occluded")
        out["generator"], out["version"] = GENERATOR, GENERATOR_VERSION
        return json.loads(json.dumps(out))  # tuples -> lists, as read back from JSON


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_train=4, n_val=3, n_cad=2, width_range=(240, 300), cad_vertices=800),
    # ~25 s per category on 2 busy CPU cores (generation ~2/3 of PrepareData's time); images
    # 440-540 px wide: at image scale 0.5 the crops are still downscaled from the originals.
    "demo": dict(n_train=120, n_val=40, n_cad=3, width_range=(440, 540), cad_vertices=2000),
}


def preset(size: str, seed: int = 0, **overrides: Any) -> SyntheticConfig:
    if size not in PRESETS:
        raise ValueError(f"unknown synthetic size {size!r}; expected one of {sorted(PRESETS)}")
    return SyntheticConfig(size=size, seed=seed, **{**PRESETS[size], **overrides})


# ----------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Box:
    """Axis-aligned box ``[lo, hi]`` (CAD units)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]


@dataclass(frozen=True)
class Cylinder:
    """Cylinder with its axis along ``axis`` (0 x, 1 y, 2 z)."""

    center: tuple[float, float, float]
    axis: int
    radius: float
    half_length: float


def _box(x0, x1, y0, y1, z0, z1) -> Box:
    return Box((x0, y0, z0), (x1, y1, z1))


def _wheels(axis_x: float, ys: tuple[float, ...], z: float, radius: float, half: float) -> list[Cylinder]:
    return [Cylinder((sx * axis_x, y, z), 0, radius, half) for sx in (-1, 1) for y in ys]


# Base models: x = width (left/right), y = length (back/front), z = height; sizes follow
# the extents of the released PASCAL3D+ cuboids (see module docstring).
BASE_MODELS: dict[str, list[Box | Cylinder]] = {
    "aeroplane": [Cylinder((0, 0, -0.02), 1, 0.06, 0.35), _box(-0.33, 0.33, -0.06, 0.10, -0.035, -0.005),
                  _box(-0.13, 0.13, -0.35, -0.27, 0.0, 0.02), _box(-0.012, 0.012, -0.35, -0.24, 0.02, 0.10),
                  Cylinder((-0.15, 0.06, -0.07), 1, 0.03, 0.06), Cylinder((0.15, 0.06, -0.07), 1, 0.03, 0.06)],
    "bicycle": [Cylinder((0, -0.26, -0.03), 0, 0.19, 0.02), Cylinder((0, 0.27, -0.03), 0, 0.19, 0.02),
                _box(-0.02, 0.02, -0.24, 0.22, -0.02, 0.12), _box(-0.05, 0.05, -0.16, -0.04, 0.14, 0.21),
                _box(-0.11, 0.11, 0.18, 0.25, 0.18, 0.24), _box(-0.015, 0.015, 0.2, 0.24, -0.03, 0.18)],
    "boat": [_box(-0.15, 0.15, -0.48, 0.38, -0.22, 0.0), _box(-0.09, 0.09, 0.38, 0.47, -0.18, 0.0),
             _box(-0.05, 0.05, -0.40, 0.32, -0.33, -0.22), _box(-0.10, 0.10, -0.28, 0.08, 0.0, 0.12)],
    "bottle": [Cylinder((0, 0, -0.16), 2, 0.14, 0.31), Cylinder((0, 0, 0.31), 2, 0.05, 0.16),
               _box(-0.035, 0.035, -0.18, -0.12, -0.25, 0.05)],
    "bus": [_box(-0.12, 0.12, -0.47, 0.47, -0.10, 0.135), _box(-0.11, 0.11, 0.44, 0.47, -0.02, 0.12),
            *_wheels(0.105, (-0.30, 0.30), -0.095, 0.045, 0.02)],
    "car": [_box(-0.18, 0.18, -0.44, 0.43, -0.13, 0.0), _box(-0.155, 0.155, -0.24, 0.16, 0.0, 0.12),
            *_wheels(0.16, (-0.27, 0.27), -0.10, 0.07, 0.025)],
    "chair": [_box(-0.25, 0.25, -0.25, 0.22, -0.06, 0.02), _box(-0.25, 0.25, -0.27, -0.20, 0.02, 0.39),
              *[_box(sx * 0.23 - 0.02, sx * 0.23 + 0.02, sy * 0.22 - 0.02, sy * 0.22 + 0.02, -0.37, -0.06)
                for sx in (-1, 1) for sy in (-1, 1)]],
    "diningtable": [_box(-0.43, 0.43, -0.30, 0.30, 0.17, 0.22),
                    *[_box(sx * 0.38 - 0.025, sx * 0.38 + 0.025, sy * 0.25 - 0.025, sy * 0.25 + 0.025, -0.22, 0.17)
                      for sx in (-1, 1) for sy in (-1, 1)], _box(-0.30, 0.30, -0.02, 0.02, -0.05, 0.0)],
    "motorbike": [Cylinder((0, -0.26, -0.07), 0, 0.12, 0.03), Cylinder((0, 0.27, -0.07), 0, 0.12, 0.03),
                  _box(-0.06, 0.06, -0.20, 0.20, -0.06, 0.10), _box(-0.07, 0.07, -0.22, 0.0, 0.10, 0.13),
                  _box(-0.13, 0.11, 0.19, 0.25, 0.13, 0.19)],
    "sofa": [_box(-0.46, 0.46, -0.27, 0.20, -0.25, 0.0), _box(-0.46, 0.46, -0.27, -0.12, 0.0, 0.25),
             _box(-0.46, -0.37, -0.12, 0.20, 0.0, 0.12), _box(0.37, 0.46, -0.12, 0.20, 0.0, 0.12)],
    "train": [_box(-0.08, 0.08, -0.49, 0.44, -0.08, 0.10), _box(-0.07, 0.07, 0.44, 0.49, -0.08, 0.04),
              _box(-0.07, 0.07, -0.40, -0.22, -0.105, -0.08), _box(-0.07, 0.07, 0.20, 0.38, -0.105, -0.08),
              _box(-0.03, 0.03, 0.30, 0.36, 0.10, 0.14)],
    "tvmonitor": [_box(-0.43, 0.43, 0.10, 0.28, -0.20, 0.30), _box(-0.30, 0.30, -0.28, 0.10, -0.12, 0.22),
                  _box(-0.15, 0.15, -0.10, 0.20, -0.30, -0.20), _box(-0.04, 0.04, 0.0, 0.15, -0.20, -0.12)],
}


# Per-category size of the synthetic objects relative to the real CAD extents. The crops
# (the category image size at 600 px per CAD unit) are too small for the real extents in
# many views (a 0.94-tall bottle is 566 px in a 512-px crop; a tv monitor seen from 10 deg
# above overflows by 30 %); real PASCAL3D+ objects are then cut by the crop, which the
# box-to-box vertex map distorts. Synthetic objects are shrunk just enough that typical
# views fit, and views that still do not fit are re-drawn (see sample_view).
SIZE_FACTOR: dict[str, float] = {
    "aeroplane": 1.0, "bicycle": 1.0, "boat": 0.9, "bottle": 0.8, "bus": 1.0, "car": 0.85, "chair": 0.8,
    "diningtable": 0.75, "motorbike": 1.0, "sofa": 0.75, "train": 0.95, "tvmonitor": 0.7,
}


def _scaled(parts: list[Box | Cylinder], factor: float) -> list[Box | Cylinder]:
    out: list[Box | Cylinder] = []
    for part in parts:
        if isinstance(part, Box):
            out.append(Box(tuple(np.array(part.lo) * factor), tuple(np.array(part.hi) * factor)))
        else:
            out.append(Cylinder(tuple(np.array(part.center) * factor), part.axis, part.radius * factor,
                                part.half_length * factor))
    return out


def _jitter_model(parts: list[Box | Cylinder], rng: np.random.Generator) -> list[Box | Cylinder]:
    """A CAD-model variant: one per-axis scale for the whole model and a small per-part
    size jitter."""
    scale = rng.uniform(0.88, 1.0, size=3)
    out: list[Box | Cylinder] = []
    for part in parts:
        jitter = rng.uniform(0.92, 1.08, size=3)
        if isinstance(part, Box):
            lo, hi = np.array(part.lo), np.array(part.hi)
            c, h = (lo + hi) / 2 * scale, (hi - lo) / 2 * scale * jitter
            out.append(Box(tuple(c - h), tuple(c + h)))
        else:
            c = np.array(part.center) * scale
            radial = scale[[i for i in range(3) if i != part.axis]].mean()
            out.append(Cylinder(tuple(c), part.axis, part.radius * radial * jitter[0],
                                part.half_length * scale[part.axis] * jitter[1]))
    return out


def _area(part: Box | Cylinder) -> float:
    if isinstance(part, Box):
        w, h, d = np.array(part.hi) - np.array(part.lo)
        return 2 * (w * h + h * d + w * d)
    return 2 * math.pi * part.radius * (part.radius + 2 * part.half_length)


def _cylinder_mesh(part: Cylinder, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Side grid plus two capped disks of concentric rings; (V, 3), (F, 3)."""
    length = 2 * part.half_length
    circumference = 2 * math.pi * part.radius
    edge = math.sqrt(max(_area(part) / max(n_vertices, 8), 1e-8))
    n_theta = max(12, int(round(circumference / edge)))
    n_len = max(2, int(round(length / edge)) + 1)
    n_rings = max(1, int(round(part.radius / edge)))
    ang = np.linspace(0, 2 * math.pi, n_theta, endpoint=False)
    t = np.linspace(-part.half_length, part.half_length, n_len)
    other = [i for i in range(3) if i != part.axis]

    def place(radial_a: np.ndarray, radial_b: np.ndarray, along: np.ndarray) -> np.ndarray:
        pts = np.zeros((len(along), 3))
        pts[:, other[0]], pts[:, other[1]], pts[:, part.axis] = radial_a, radial_b, along
        return pts + np.array(part.center)

    # Side: n_len rings of n_theta vertices.
    tt, aa = np.meshgrid(t, ang, indexing="ij")
    side = place(part.radius * np.cos(aa).ravel(), part.radius * np.sin(aa).ravel(), tt.ravel())
    faces = []
    for i in range(n_len - 1):
        for j in range(n_theta):
            a, b = i * n_theta + j, i * n_theta + (j + 1) % n_theta
            faces += [(a, b, a + n_theta), (b, b + n_theta, a + n_theta)]
    verts = [side]
    base = len(side)
    for end in (-part.half_length, part.half_length):
        ring_verts = [place(np.zeros(1), np.zeros(1), np.full(1, end))]
        prev = [base]
        count = base + 1
        for k in range(1, n_rings + 1):
            r = part.radius * k / n_rings
            ring = place(r * np.cos(ang), r * np.sin(ang), np.full(n_theta, end))
            ids = list(range(count, count + n_theta))
            for j in range(n_theta):
                j1 = (j + 1) % n_theta
                if k == 1:
                    faces.append((prev[0], ids[j], ids[j1]))
                else:
                    faces += [(prev[j], ids[j], ids[j1]), (prev[j], ids[j1], prev[j1])]
            ring_verts.append(ring)
            prev, count = ids, count + n_theta
        verts += ring_verts
        base = count
    return np.concatenate(verts), np.array(faces, dtype=np.int64)


@dataclass(frozen=True)
class CadModel:
    """A procedural CAD model.

    Attributes:
        verts: (V, 3) float64; faces: (F, 3) int64.
        face_normal: (F, 3) outward unit normal of each face (from its part's centre).
        anchors: (K, 3) keypoint anchors in constants.KEYPOINT_NAMES order.
    """

    verts: np.ndarray
    faces: np.ndarray
    face_normal: np.ndarray
    anchors: np.ndarray


def build_cad_model(category: str, parts: list[Box | Cylinder], n_vertices: int) -> CadModel:
    """Tessellate the parts (vertex budget shared by area) and place the anchors."""
    total = sum(_area(p) for p in parts)
    all_v, all_f, all_n, base = [], [], [], 0
    for part in parts:
        budget = max(30, int(round(n_vertices * _area(part) / total)))
        if isinstance(part, Box):
            v, f = mesh.cuboid_mesh(*zip(part.lo, part.hi), n_vertices=budget)
            centre = (np.array(part.lo) + np.array(part.hi)) / 2
        else:
            v, f = _cylinder_mesh(part, budget)
            centre = np.array(part.center)
        tri = v[f]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        if isinstance(part, Cylinder):
            # Outward from the axis on the side, along the axis on the caps.
            rel = tri.mean(1) - centre
            on_cap = np.abs(np.abs(rel[:, part.axis]) - part.half_length) < 1e-9
            out_dir = rel.copy()
            out_dir[~on_cap, part.axis] = 0
            out_dir[on_cap] = 0
            out_dir[on_cap, part.axis] = np.sign(rel[on_cap, part.axis])
        else:
            out_dir = tri.mean(1) - centre
        flip = np.einsum("fi,fi->f", normal, out_dir) < 0
        normal[flip] *= -1
        all_n.append(normal / np.linalg.norm(normal, axis=1, keepdims=True))
        all_v.append(v)
        all_f.append(f + base)
        base += len(v)
    verts, faces = np.concatenate(all_v), np.concatenate(all_f)
    return CadModel(verts, faces, np.concatenate(all_n), anchor_points(category, verts))


def cad_models(category: str, config: SyntheticConfig) -> list[CadModel]:
    """The ``n_cad`` CAD models of a category (model 1 is the base model)."""
    constants.check_category(category)
    out = []
    for i in range(config.n_cad):
        rng = _rng(config.seed, category, "cad", i)
        parts = _scaled(BASE_MODELS[category], SIZE_FACTOR[category])
        parts = parts if i == 0 else _jitter_model(parts, rng)
        out.append(build_cad_model(category, parts, config.cad_vertices))
    return out


# Keypoint names -> target position on the model's box, by tokens. Coordinates are in
# [-1, 1] of the box per axis (x: left -1 / right +1; y: back -1 / front +1; z: bottom -1 /
# top +1). The first height token of a name sets z; later height words (the "lower" of
# "top_lower_left") then mean near/far, i.e. y.
_X_TOKENS = {"left": -1.0, "right": 1.0}
_Y_TOKENS = {"front": 1.0, "head": 1.0, "nose": 1.0, "noselanding": 1.0, "light": 1.0, "headlight": 1.0,
             "windshield": 0.35, "handle": 0.8, "mid1": 0.33, "mid2": -0.33, "back": -1.0, "tail": -1.0,
             "rear": -1.0, "rearwindow": -0.45, "trunk": -1.0, "elevator": -1.0, "rudder": -1.0}
_Z_TOKENS = {"upper": 1.0, "top": 1.0, "up": 1.0, "mouth": 1.0, "lower": -1.0, "bottom": -1.0, "down": -1.0,
             "wheel": -0.6, "leg": -1.0, "seat": 0.3, "pedal": -0.3, "noselanding": -0.6, "windshield": 1.0,
             "rearwindow": 1.0, "handle": 1.0}


def anchor_target(name: str) -> np.ndarray:
    """(3,) position in [-1, 1]^3 of the model box for a keypoint name (see tokens above)."""
    pos = np.zeros(3)
    z_set = False
    for token in name.split("_"):
        if token in _X_TOKENS:
            pos[0] = _X_TOKENS[token]
        if token in _Y_TOKENS:
            pos[1] = _Y_TOKENS[token]
        if token in _Z_TOKENS:
            if not z_set:
                pos[2] = _Z_TOKENS[token]
                z_set = True
            elif token in ("upper", "lower", "up", "down", "top", "bottom"):
                pos[1] = _Z_TOKENS[token]
    return pos


def anchor_points(category: str, verts: np.ndarray) -> np.ndarray:
    """(K, 3) anchors: each name's box target snapped to the nearest model vertex."""
    lo, hi = verts.min(0), verts.max(0)
    out = []
    for name in constants.KEYPOINT_NAMES[category]:
        target = lo + (anchor_target(name) + 1) / 2 * (hi - lo)
        out.append(verts[np.argmin(np.linalg.norm(verts - target, axis=1))])
    return np.array(out)


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
    xy = geometry.project_points(model.verts, azimuth, elevation, theta, 5.0, FOCAL, (0.0, 0.0), VIEWPORT)
    height, width = constants.image_size(category)
    return float(max(np.abs(xy[:, 0]).max() / (width / 2), np.abs(xy[:, 1]).max() / (height / 2)))


def sample_view(rng: np.random.Generator, model: CadModel, config: SyntheticConfig, category: str) -> View:
    """A PASCAL3D+-like viewpoint with the object fully inside the image, near its centre.

    Azimuth uniform; elevation uniform in -10..40 deg (85 %) or -20..65 deg; theta ~ N(0, 4
    deg) clipped to 15 deg. Elevation and theta are re-drawn (up to 30 times, then the best
    is kept) until the object fits the category's crop (:func:`crop_fill` <= CROP_FILL),
    which lowers the elevations of long objects as in real photographs.
    """
    width = int(rng.integers(config.width_range[0], config.width_range[1] + 1))
    height = int(round(width * rng.uniform(*config.aspect_range)))
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
    fraction = rng.uniform(*config.object_fraction)
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


# ----------------------------------------------------------------------------- records


def _struct(fields: dict[str, Any], shape: tuple[int, int] = (1, 1)) -> np.ndarray:
    """A MATLAB struct array for scipy.io.savemat (every element gets ``fields``)."""
    arr = np.zeros(shape, dtype=[(k, "O") for k in fields])
    for idx in np.ndindex(shape):
        for k, v in fields.items():
            arr[idx][k] = v
    return arr


def _num(value: float) -> np.ndarray:
    return np.array([[float(value)]])


def make_record(name: str, category: str, view: View, bbox: np.ndarray, cad_index: int, subtype: str,
                status: np.ndarray, xy: np.ndarray) -> dict[str, Any]:
    """The ``record`` of a PASCAL3D+ ``.mat`` file (same nesting as the real ones)."""
    deg = 180.0 / math.pi
    viewpoint = _struct({
        "azimuth_coarse": _num(round(view.azimuth * deg) % 360), "elevation_coarse": _num(round(view.elevation * deg)),
        "azimuth": _num(view.azimuth * deg), "elevation": _num(view.elevation * deg), "distance": _num(view.distance),
        "focal": _num(FOCAL), "px": _num(view.px), "py": _num(view.py), "theta": _num(view.theta * deg),
        "error": _num(0.0), "interval_azimuth": _num(0.0), "interval_elevation": _num(0.0), "num_anchor": _num(0.0),
        "viewport": _num(VIEWPORT)})
    anchors = _struct({kp: _struct({"location": np.array([xy[k]]) if status[k] == 1 else np.zeros((0, 0)),
                                    "status": _num(status[k])})
                       for k, kp in enumerate(constants.KEYPOINT_NAMES[category])})
    objects = _struct({"class": category, "view": "", "bbox": np.array([bbox], dtype=np.float64),
                       "truncated": _num(0), "occluded": _num(0), "difficult": _num(0),
                       "viewpoint": viewpoint, "cad_index": np.array([[cad_index]], dtype=np.float64),
                       "anchors": anchors, "subtype": subtype})
    return {"filename": f"{name}.JPEG", "folder": f"{category}_{DATASET}", "source": "synthetic (nemopose)",
            "imgsize": np.array([[view.width, view.height, 3]], dtype=np.float64), "database": "synthetic",
            "objects": objects, "segmented": _num(0)}


def save_mat(path: Path, record: dict[str, Any]) -> None:
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"record": record})
    atomic_write_bytes(path, buf.getvalue())


def save_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    atomic_write_bytes(path, buf.getvalue())


def save_cad_mat(path: Path, category: str, models: list[CadModel]) -> None:
    """``CAD/<cat>.mat``: a 1 x n struct named after the category with ``vertices``,
    ``faces`` (1-based, as MATLAB) and one 1 x 3 field per keypoint anchor."""
    names = constants.KEYPOINT_NAMES[category]
    arr = np.zeros((1, len(models)), dtype=[("vertices", "O"), ("faces", "O")] + [(n, "O") for n in names])
    for i, m in enumerate(models):
        arr[0, i]["vertices"] = m.verts
        arr[0, i]["faces"] = (m.faces + 1).astype(np.float64)
        for k, n in enumerate(names):
            arr[0, i][n] = m.anchors[k][None]
    buf = io.BytesIO()
    scipy.io.savemat(buf, {category: arr})
    atomic_write_bytes(path, buf.getvalue())


def load_cad_anchors(path: str | Path, category: str) -> list[np.ndarray]:
    """Anchors (K, 3) per CAD model from a ``CAD/<cat>.mat`` written by :func:`save_cad_mat`."""
    arr = scipy.io.loadmat(str(path))[category]
    return [np.stack([np.asarray(arr[0, i][n], dtype=np.float64).reshape(3)
                      for n in constants.KEYPOINT_NAMES[category]]) for i in range(arr.shape[1])]


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


# ----------------------------------------------------------------------------- generation


def _rng(seed: int, category: str, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The independent random stream ``stream`` of one item (image, CAD model)."""
    return np.random.default_rng([seed, constants.CATEGORIES.index(category),
                                  ("train", "val", "cad").index(split), index, stream])


def image_name(category: str, split: str, index: int) -> str:
    """Image ids say what they are: ``synthetic_<cat>_<split>_NNNN``."""
    return f"synthetic_{category}_{split}_{index:04d}"


def _to_uint8(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """[0, 1] float image plus Gaussian noise (0-255 scale) -> uint8."""
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))   # torch's randn is much faster
    noise = torch.randn(image.shape, generator=gen) * sigma
    noisy = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)) * 255 + noise
    return noisy.round_().clamp_(0, 255).to(torch.uint8).numpy()


def generate_image(category: str, split: str, index: int, models: list[CadModel],
                   config: SyntheticConfig) -> tuple[np.ndarray, dict[str, Any], Rendered]:
    """Render one image and its record. Returns (image float (H, W, 3), record, render)."""
    rng = _rng(config.seed, category, split, index)
    cad_index = int(rng.integers(len(models))) + 1
    model = models[cad_index - 1]
    view = sample_view(rng, model, config, category)
    rendered = render_object(model, view.azimuth, view.elevation, view.theta, view.distance,
                             (view.px, view.py), (view.height, view.width))
    background = clutter_background(rng, view.height, view.width)
    image = np.where(rendered.mask[..., None], rendered.colour, background)
    rows, cols = np.nonzero(rendered.mask)
    bbox = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.float64)
    status, xy = keypoint_status(model, view, rendered)
    subtypes = constants.SUBTYPE_NAMES[category]
    subtype = subtypes[(cad_index - 1) % (len(subtypes) - 1)]
    record = make_record(image_name(category, split, index), category, view, bbox, cad_index, subtype, status, xy)
    return image, record, rendered


def write_markers(dataroot: Path, config: SyntheticConfig, categories: list[str]) -> None:
    """``SYNTHETIC.json`` in the release (and occluded) folder: what made it, and which
    categories are complete. Rewritten only when it changes."""
    note = ("SYNTHETIC data generated by nemopose.data.synthetic: NOT PASCAL3D+. Results on it "
            "must never be reported as PASCAL3D+ results.")
    body = {"synthetic": True, "note": note, "config": config.marker(), "categories": sorted(categories)}
    folders = [layout.release_root(dataroot)] + ([layout.occluded_root(dataroot)] if config.occluded else [])
    for folder in folders:
        path = folder / layout.SYNTHETIC_MARKER
        if not path.is_file() or json.loads(path.read_text()) != body:
            atomic_write_json(path, body)


def read_marker(dataroot: Path) -> dict[str, Any] | None:
    path = layout.release_root(dataroot) / layout.SYNTHETIC_MARKER
    if not path.is_file():
        return None
    return json.loads(path.read_text())


class SyntheticMismatch(RuntimeError):
    """A synthetic dataset made with other settings is already at the data root."""


def _remove_category(dataroot: Path, category: str) -> None:
    """Delete a category's generated files (only ever inside marked synthetic folders)."""
    release, occ = Pascal3DRelease(layout.release_root(dataroot)), OccludedRelease(layout.occluded_root(dataroot))
    targets = [release.image_dir(category), release.annotation_dir(category), release.cad_dir(category)]
    if layout.is_synthetic(occ.root):
        targets += [d for lv in constants.OCCLUSION_LEVELS for d in (occ.image_dir(category, lv),
                                                                       occ.mask_dir(category, lv))]
    for t in targets:
        if t.is_dir():
            shutil.rmtree(t)


def generate(dataroot: str | Path, categories: list[str], config: SyntheticConfig,
             overwrite: bool = False, progress: bool = True) -> dict[str, dict[str, int]]:
    """Generate (or complete) the synthetic PASCAL3D+ for ``categories``.

    Idempotent: a category listed as done in the marker (same settings) is skipped. A
    marker with other settings raises :class:`SyntheticMismatch` unless ``overwrite``,
    which regenerates the requested categories from scratch.

    Returns:
        {category: {"train": n, "val": n, "occluded": n, "skipped": 0 or 1}}.
    Raises:
        RuntimeError when ``dataroot`` holds a real (unmarked) PASCAL3D+.
    """
    dataroot = Path(dataroot)
    release_dir = layout.release_root(dataroot)
    if release_dir.exists() and any(release_dir.iterdir()) and not layout.is_synthetic(release_dir):
        raise RuntimeError(f"{release_dir} holds a real PASCAL3D+ (no {layout.SYNTHETIC_MARKER}); "
                           "refusing to write synthetic data into it")
    marker = read_marker(dataroot)
    done: set[str] = set()
    if marker is not None:
        if marker.get("config") != config.marker():
            if not overwrite:
                raise SyntheticMismatch(
                    f"{release_dir} holds a synthetic dataset made with other settings "
                    f"({marker.get('config')}); use overwrite (OVERWRITE=yes) or another data root")
        else:
            done = set(marker.get("categories", []))
        occ_marker = layout.occluded_root(dataroot) / layout.SYNTHETIC_MARKER
        if config.occluded and not occ_marker.is_file():
            done = set()  # occluded part never written with these settings
    release = Pascal3DRelease(release_dir)
    occluded = OccludedRelease(layout.occluded_root(dataroot))
    write_markers(dataroot, config, sorted(done))   # mark first: a partial folder is still marked
    summary: dict[str, dict[str, int]] = {}
    for category in categories:
        if category in done and not overwrite:
            log.info("synthetic %s: already generated, skipped", category)
            summary[category] = {"train": config.n_train, "val": config.n_val,
                                 "occluded": config.n_val * len(constants.OCCLUSION_LEVELS) if config.occluded else 0,
                                 "skipped": 1}
            continue
        start = time.time()
        _remove_category(dataroot, category)
        models = cad_models(category, config)
        for i, m in enumerate(models):
            mesh.save_off(release.cad_dir(category) / f"{i + 1:02d}.off", m.verts, m.faces)
        save_cad_mat(release.root / "CAD" / f"{category}.mat", category, models)
        atomic_write_text(release.subtype_path(category), "".join(f"{s}\n" for s in constants.SUBTYPE_NAMES[category]))
        n_occ = 0
        for split, count in (("train", config.n_train), ("val", config.n_val)):
            names = []
            for i in tqdm(range(count), desc=f"synthetic {category} {split}", leave=False, disable=not progress):
                name = image_name(category, split, i)
                image, record, rendered = generate_image(category, split, i, models, config)
                rng = _rng(config.seed, category, split, i, stream=1)   # noise and occluders
                save_jpeg(release.image_path(category, name), _to_uint8(image, rng, config.noise_sigma),
                          config.jpeg_quality)
                save_mat(release.annotation_path(category, name), record)
                names.append(name)
                if split == "val" and config.occluded:
                    for level in constants.OCCLUSION_LEVELS:
                        occ_img, occ_mask, _ = paste_occluders(rng, image, rendered.mask,
                                                               constants.OCCLUSION_FG_RANGES[level])
                        save_jpeg(occluded.image_path(category, level, name),
                                  _to_uint8(occ_img, rng, config.noise_sigma), config.jpeg_quality)
                        atomic_savez(occluded.mask_path(category, level, name), compressed=True,
                                     occluder_mask=occ_mask)
                        n_occ += 1
            atomic_write_text(release.image_set_path(category, split), "".join(f"{n}\n" for n in names))
        done.add(category)
        write_markers(dataroot, config, sorted(done))
        summary[category] = {"train": config.n_train, "val": config.n_val, "occluded": n_occ, "skipped": 0}
        log.info("synthetic %s: %d train, %d val, %d occluded images in %.1f s", category, config.n_train,
                 config.n_val, n_occ, time.time() - start)
    return summary


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the synthetic PASCAL3D+ (SPEC 14). "
                                     "It is marked as synthetic and must never be reported as PASCAL3D+.")
    parser.add_argument("--dataroot", default="data", help="data root (default: data)")
    parser.add_argument("--categories", default="all", help="categories, e.g. 'car bus' (default: all)")
    parser.add_argument("--size", default="demo", choices=sorted(PRESETS), help="size preset (default: demo)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--no-occluded", action="store_true", help="skip the occluded levels (default: write them)")
    parser.add_argument("--overwrite", action="store_true", help="regenerate existing categories (default: no)")
    args = parser.parse_args(argv)
    setup_logging()
    torch.set_num_threads(1)  # small tensors: one thread is fastest (see PrepareConfig.threads)
    config = replace(preset(args.size, args.seed), occluded=not args.no_occluded)
    generate(args.dataroot, constants.parse_categories(args.categories), config, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
