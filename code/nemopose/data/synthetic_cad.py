"""Procedural CAD models of the synthetic PASCAL3D+ (METHOD.md §14): per category a few boxes and
cylinders with the category's proportions, tessellated densely, with keypoint anchors.

Sizes follow the extents of the released PASCAL3D+ cuboids (e.g. car x +-0.18, y -0.44..0.43,
z -0.17..0.12), so the crops' r = distance / 5 normalisation and the solver's per-category
render distances behave as on real data; categories whose real extents overflow their crop
in typical views are shrunk a little (:data:`SIZE_FACTOR`). Each CAD model is the base model
with its own per-axis scale and part jitter; the vertex density follows the area, so the
cuboid extents (99 % of the vertices) behave. Anchors: one per keypoint name, placed by the
tokens of its name (left/right -> x, front/back/head/tail -> y, upper/lower/top/bottom -> z)
on the model's box and snapped to the nearest surface vertex.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from .. import constants, mesh
from ..utils import atomic_write_bytes


def item_rng(seed: int, category: str, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The independent random stream ``stream`` of one item (image, CAD model)."""
    return np.random.default_rng([seed, constants.CATEGORIES.index(category),
                                  ("train", "val", "cad").index(split), index, stream])


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


def cad_models(category: str, n_cad: int, n_vertices: int, seed: int) -> list[CadModel]:
    """The ``n_cad`` CAD models of a category (model 1 is the base model), about
    ``n_vertices`` vertices each, jittered from the random streams of ``seed``."""
    constants.check_category(category)
    out = []
    for i in range(n_cad):
        parts = _scaled(BASE_MODELS[category], SIZE_FACTOR[category])
        parts = parts if i == 0 else _jitter_model(parts, item_rng(seed, category, "cad", i))
        out.append(build_cad_model(category, parts, n_vertices))
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
