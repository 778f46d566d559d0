"""A tiny fake prepared dataset in NeMo's layout (METHOD.md §13), for training tests.

Small cuboid meshes are projected with the project's camera model at random poses; every
visible vertex paints a small blob whose colour depends on its face and position, over a noisy
background. So the data is learnable (vertex features are identifiable), fast to train on, and
exercises the real readers (layout, annotation npz, lists, dataset.json).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from nemopose import geometry, mesh
from nemopose import constants
from nemopose.data import annotation, layout

EXTENTS = {"car": ((-0.18, 0.18), (-0.44, 0.43), (-0.17, 0.12)),
           "bus": ((-0.2, 0.2), (-0.5, 0.5), (-0.22, 0.22)),
           "aeroplane": ((-0.5, 0.5), (-0.45, 0.45), (-0.1, 0.1))}


def _annotation(name, kp, visible, weights, pose, image_size, cad_index):
    h, w = image_size
    a, e, t, d = pose
    (y0, x0), (y1, x1) = kp.min(0).astype(int), kp.max(0).astype(int) + 1
    return dict(name=name, box=np.array([0, h, 0, w, h, w]), box_ori=np.array([0, h, 0, w, h, w]),
                box_obj=np.array([y0, y1, x0, x1, h, w]),
                cropped_kp_list=kp.astype(np.float32), visible=visible.astype(np.int32),
                azimuth=a, elevation=e, theta=t, distance=d, focal=1.0,
                principal=np.array([w / 2, h / 2]), viewport=3000.0, height=h, width=w,
                cad_index=cad_index, bbox=np.array([0, 0, w, h]), kp_weights=weights.astype(np.float32))


def make_fake_dataset(root: str | Path, categories=("car",), n_train: int = 8, n_val: int = 4,
                      scale: float = 0.25, n_vertices: int = 60, seed: int = 0, mesh_d: str = "single",
                      n_meshes: int = 1) -> Path:
    """Write train and val splits under ``root``; returns root. ``n_meshes > 1`` with
    ``mesh_d='multi'`` writes one list per mesh (images assigned round-robin)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for cat in categories:
        size = constants.image_size(cat, scale)
        meshes = []
        for k in range(1, n_meshes + 1):
            ext = [(lo * (1 + 0.1 * (k - 1)), hi * (1 + 0.1 * (k - 1))) for lo, hi in EXTENTS.get(cat, EXTENTS["car"])]
            verts, faces = mesh.cuboid_mesh(*ext, n_vertices=n_vertices)
            mesh.save_off(layout.cuboid_dir(root, mesh_d, cat) / f"{k:02d}.off", verts, faces)
            meshes.append((verts, mesh.vertex_normals(verts, faces)))
        for split, count in (("train", n_train), ("val", n_val)):
            lay = layout.split_layout(root, split, cat)
            lists: dict[int, list[str]] = {k: [] for k in range(1, n_meshes + 1)}
            for i in range(count):
                name = f"{cat}_{split}_{i:03d}"
                k = i % n_meshes + 1
                verts, normals = meshes[k - 1]
                pose = (rng.uniform(0, 2 * np.pi), rng.uniform(-0.1, 0.6), rng.uniform(-0.2, 0.2), 5.0)
                h1, w1 = size[0] / scale, size[1] / scale
                xy = geometry.project_points(verts, *pose, principal=np.array([w1 / 2, h1 / 2]))
                kp = np.stack([xy[:, 1], xy[:, 0]], axis=1) * scale                # (row, col)
                kp = np.clip(np.round(kp), 0, np.array(size) - 1)
                center = geometry.camera_center(np.array(pose[0]), np.array(pose[1]), np.array(pose[3]))
                to_cam = np.asarray(center)[None] - verts
                cos = (normals * to_cam).sum(1) / np.linalg.norm(to_cam, axis=1)
                visible = cos > 0
                image = rng.integers(0, 60, size=size + (3,), dtype=np.uint8)
                colours = (np.clip(normals * 0.5 + 0.5, 0, 1) * 150 + 60 + 40 * np.sin(verts * 20)).clip(0, 255)
                for v in np.flatnonzero(visible):
                    r, c = int(kp[v, 0]), int(kp[v, 1])
                    image[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2] = colours[v].astype(np.uint8)
                Image.fromarray(image).save(lay.image_path(name) if lay.images.is_dir() else _mk(lay.image_path(name)),
                                            format="JPEG", quality=95)
                anno = _annotation(name, kp, visible, np.abs(cos) * visible, pose, size, k)
                annotation.save(lay.annotation3d_path(mesh_d, name), **anno)
                two_d = {key: v for key, v in anno.items() if key != "kp_weights"}
                two_d["cropped_kp_list"] = kp[:12].astype(np.float32)
                two_d["visible"] = visible[:12].astype(np.int32)
                annotation.save(lay.annotation_path(name), **two_d)
                lists[k].append(name)
            for k, names in lists.items():
                layout.write_list(lay.mesh_list_path(mesh_d, k), names)
            layout.save_dataset_info(lay.root, layout.DatasetInfo(synthetic=True, image_scale=scale,
                                                                  source="tests/fakedata.py"))
    return root


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
