"""Pictures of a solved image (METHOD.md §16): the mesh over the input at a pose, the
occlusion map, loss landscapes around the prediction, and a GIF of the optimisation.

The pose solver's camera is defined on the feature map (field of view 12 degrees over a
square of side S = max(h, w)); the same field of view over the input crop's max(H, W)
draws the mesh over the input image at the same pose. Poses here are the solver's: their
distance is a render distance; an annotation's PASCAL3D+ distance is converted first
(:func:`nemopose.geometry.render_distance`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from .. import geometry
from ..render import raster as render
from ..evaluate import rotation_errors_deg
from ..solve.solver import MeshPoseSolver

ANGLES = ("azimuth", "elevation", "theta")

BACKGROUND, VISIBLE, OCCLUDED = 0, 1, 2
OCCLUSION_COLOURS = np.array([[40, 40, 40], [60, 180, 75], [230, 60, 60]], dtype=np.uint8)


def _pose_tensors(pose: Mapping[str, float] | Sequence[float]):
    if isinstance(pose, Mapping):
        pose = [pose["azimuth"], pose["elevation"], pose["theta"], pose["distance"]]
    p = torch.as_tensor(np.asarray(pose, dtype=np.float64)).reshape(1, 4)
    return geometry.camera_center(p[:, 0], p[:, 1], p[:, 3]), p[:, 2]


OCCLUSION_TITLE = "occlusion map at the predicted pose\n(grey background, green visible, red occluded)"


def render_silhouette(verts, faces, pose, image_size: tuple[int, int], shift: tuple[float, float] = (0.0, 0.0),
                      render_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise the mesh over an image of ``image_size`` (H, W) at ``pose``
    (azimuth, elevation, theta, render distance) with the pose solver's camera (square side
    ``render_size``, default ``max(image_size)``), its principal point moved by ``shift``
    (x, y) pixels.

    Returns:
        mask (H, W) bool and shade (H, W) float in [0, 1] (|cos| of the face normal and the
        viewing direction, for a readable overlay).
    """
    center, theta = _pose_tensors(pose)
    cam = render.RenderCamera(tuple(image_size), render_size=render_size or max(image_size))
    v = torch.as_tensor(verts, dtype=torch.float64)
    f = torch.as_tensor(faces, dtype=torch.long)
    screen = render.project_vertices(v, center, theta, cam)
    screen = screen + torch.tensor([shift[0], shift[1], 0.0], dtype=screen.dtype)
    frags = render.rasterize(screen, f, image_size)
    p2f = frags.pix_to_face[0]
    mask = (p2f >= 0).numpy()
    # face normals in camera space: rotate world normals
    tri = v[f]
    normals = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    normals = torch.nn.functional.normalize(normals, dim=1)
    view = torch.nn.functional.normalize(center[0] - tri.mean(1), dim=1)
    face_shade = (normals * view).sum(1).abs()
    shade = np.zeros(mask.shape)
    shade[mask] = face_shade[p2f[p2f >= 0]].numpy()
    return mask, shade


def overlay_mesh(image: np.ndarray, verts, faces, pose, colour=(0, 220, 255), alpha: float = 0.45,
                 shift: tuple[float, float] = (0.0, 0.0), render_size: int | None = None) -> np.ndarray:
    """The input image with the mesh drawn over it at ``pose`` (principal point moved by
    ``shift`` pixels): shaded fill plus outline.

    Args:
        image: (H, W, 3) uint8.
    Returns:
        (H, W, 3) uint8.
    """
    image = np.asarray(image)
    mask, shade = render_silhouette(verts, faces, pose, image.shape[:2], shift, render_size)
    out = image.astype(np.float64).copy()
    col = np.asarray(colour, dtype=np.float64)
    tint = (0.5 + 0.5 * shade[..., None]) * col
    out[mask] = (1 - alpha) * out[mask] + alpha * tint[mask]
    edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1))
    out[edge] = col
    return out.clip(0, 255).astype(np.uint8)


def occlusion_map(solver: MeshPoseSolver, feature_map: torch.Tensor, clutter: torch.Tensor, pose) -> np.ndarray:
    """Per feature-map pixel: background (outside the rendered silhouette), object visible
    (s_o >= s_c inside it) or object occluded (s_o < s_c inside it).

    Args:
        feature_map: (C, h, w); clutter: (C,).
    Returns:
        (h, w) int labels BACKGROUND / VISIBLE / OCCLUDED.
    """
    center, theta = _pose_tensors(pose)
    rendered = render.render_features(solver.verts, solver.faces, solver.vertex_features, center.float(),
                                      theta.float(), solver.camera)[0]
    fmap = torch.as_tensor(feature_map, dtype=torch.float32)
    inside = rendered.abs().sum(0) > 0
    s_o = (rendered * fmap).sum(0)
    s_c = (fmap * torch.as_tensor(clutter, dtype=torch.float32).reshape(-1, 1, 1)).sum(0)
    labels = torch.full(inside.shape, BACKGROUND, dtype=torch.long)
    labels[inside & (s_o >= s_c)] = VISIBLE
    labels[inside & (s_o < s_c)] = OCCLUDED
    return labels.numpy()


def loss_landscape(solver: MeshPoseSolver, feature_map: torch.Tensor, clutter, pose, n: int = 61,
                   spans: Mapping[str, float] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Loss along azimuth, elevation, theta and distance through ``pose``, one at a time.

    The azimuth goes once round the circle: ``n`` values in [0, 2 pi), increasing, one of
    them ``pose``'s own (so any ground truth lies inside the curve). The others span
    ``pose``'s value +- ``spans`` (theta and elevation in radians, distance in render units).

    Returns:
        {parameter: (values, losses)}, each (n,); values in radians / render units.
    """
    spans = dict({"elevation": math.pi / 4, "theta": math.pi / 4, "distance": 2.0}, **(spans or {}))
    base = np.asarray([pose[k] for k in ("azimuth", "elevation", "theta", "distance")] if isinstance(pose, Mapping)
                      else pose, dtype=np.float64)
    out = {}
    for i, name in enumerate(("azimuth", "elevation", "theta", "distance")):
        if name == "azimuth":       # the pose's azimuth plus whole grid steps, wrapped into [0, 2 pi)
            values = np.sort(np.mod(base[i] + np.arange(n) * (2 * math.pi / n), 2 * math.pi))
        else:
            values = base[i] + np.linspace(-spans[name], spans[name], n)
        if name == "distance":
            values = np.clip(values, 0.5, None)
        if name == "elevation":
            values = np.clip(values, -math.pi / 2 + 1e-3, math.pi / 2 - 1e-3)
        poses = np.repeat(base[None], n, 0)
        poses[:, i] = values
        losses = solver.losses_at(feature_map[None], clutter, torch.as_tensor(poses))
        out[name] = (values, losses.numpy())
    return out


def landscape_panels(land: Mapping[str, tuple[np.ndarray, np.ndarray]], pred: Mapping[str, float],
                     gt: Mapping[str, float] | None = None) -> list[dict]:
    """What each landscape panel draws, in the units of its axis: angles in degrees (the
    azimuth in [0, 360)), distances in render units (``pred`` and ``gt`` are solver poses).

    Returns:
        per parameter: ``name``, ``unit``, ``x`` (n,), ``loss`` (n,), ``pred``, ``gt`` (or
        None), ``minimum`` (x of the lowest loss), ``step`` (grid step) and ``note``: empty
        when the minimum is within one step of the prediction, else a legend line saying how
        far it is (the pose solver stopped before the minimum along this line, or the line
        through the other parameters' values has its minimum elsewhere).
    """
    panels = []
    for name, (values, losses) in land.items():
        if name in ANGLES:
            x, unit = np.degrees(values), "degrees"
            to_axis = (lambda v: float(np.mod(np.degrees(v), 360.0))) if name == "azimuth" else \
                (lambda v: float(np.degrees(v)))
        else:
            x, unit, to_axis = np.asarray(values, dtype=np.float64), "render distance", float
        step = float(np.median(np.diff(x)))
        minimum = float(x[int(np.argmin(losses))])
        p = to_axis(pred[name])
        off = abs(minimum - p)
        if name == "azimuth":
            off = min(off, 360.0 - off)
        note = "" if off <= step * 1.01 else \
            f"lowest loss at {minimum:.2f}: {off / step:.0f} grid steps\nfrom the prediction (the solver\n" \
            "stopped short of it on this line)"
        panels.append({"name": name, "unit": unit, "x": x, "loss": np.asarray(losses), "pred": p,
                       "gt": None if gt is None else to_axis(gt[name]), "minimum": minimum, "step": step, "note": note})
    return panels


def plot_solution(path: str | os.PathLike, image: np.ndarray, solver: MeshPoseSolver, feature_map: torch.Tensor,
                  clutter, pred: Mapping[str, float], gt: Mapping[str, float] | None = None,
                  title: str = "") -> Path:
    """One PNG: input with the predicted mesh (and the ground truth), the occlusion map, and
    the loss landscapes with the prediction and ground truth marked. ``pred`` and ``gt``
    are solver poses (render distances)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(18, 7))
    ax = axes[0, 0]
    ax.imshow(overlay_mesh(image, solver.verts.cpu(), solver.faces.cpu(), pred))
    ax.set_title("prediction")
    ax = axes[0, 1]
    if gt is not None:
        ax.imshow(overlay_mesh(image, solver.verts.cpu(), solver.faces.cpu(), gt, colour=(255, 200, 0)))
        ax.set_title("ground truth")
    else:
        ax.imshow(image)
        ax.set_title("input")
    labels = occlusion_map(solver, feature_map, clutter, pred)
    ax = axes[0, 2]
    ax.imshow(OCCLUSION_COLOURS[labels], interpolation="nearest")
    ax.set_title(OCCLUSION_TITLE, fontsize=10)
    axes[0, 3].axis("off")
    if gt is not None:
        err = float(rotation_errors_deg({k: [pred[k]] for k in ANGLES}, {k: [gt[k]] for k in ANGLES})[0])
        axes[0, 3].text(0.0, 0.5, f"rotation error {err:.1f} deg\nloss {pred.get('loss', float('nan')):.4f}",
                        fontsize=13)
    for a in axes[0, :3]:
        a.axis("off")
    panels = landscape_panels(loss_landscape(solver, feature_map, clutter, pred), pred, gt)
    for ax, panel in zip(axes[1], panels):
        ax.plot(panel["x"], panel["loss"], "k-", lw=1)
        ax.axvline(panel["pred"], color="tab:blue", label=f"prediction {panel['pred']:.2f}")
        if panel["gt"] is not None:
            ax.axvline(panel["gt"], color="tab:orange", ls="--", label=f"ground truth {panel['gt']:.2f}")
        if panel["note"]:
            ax.plot([panel["minimum"]], [panel["loss"].min()], "v", color="tab:red", label=panel["note"])
        if panel["name"] == "azimuth":
            ax.set_xlim(0, 360)
            ax.set_xticks(range(0, 361, 90))
        ax.set_xlabel(f"{panel['name']} ({panel['unit']})" if panel["unit"] == "degrees"
                      else "distance (render units, the pose solver's)")
        ax.set_ylabel("loss")
        ax.set_title(f"loss along {panel['name']}, the rest at the prediction", fontsize=9)
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def save_optimisation_gif(path: str | os.PathLike, image: np.ndarray, verts, faces, trajectory: np.ndarray,
                          every: int = 10, duration_ms: int = 80) -> Path:
    """Animated GIF of the mesh over the input along an optimisation trajectory
    ((T, 4) azimuth, elevation, theta, distance per step)."""
    trajectory = np.asarray(trajectory)
    frames = [Image.fromarray(overlay_mesh(image, verts, faces, trajectory[t]))
              for t in list(range(0, len(trajectory), every)) + [len(trajectory) - 1]]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return path


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """Visualise solved val images of a trained category: PNG (+ GIF) per image."""
    import argparse
    import logging

    from .. import constants
    from ..data import layout
    from ..data.datasets import TestDataset
    from ..errors import UsageError
    from ..experiment import Experiment
    from ..solve.neural_mesh import load_trained
    from ..solve.solver import SolverConfig
    from ..utils import setup_logging

    p = argparse.ArgumentParser(description="Visualise NeMo pose estimates of val images.")
    p.add_argument("--dataroot", default="data", help="prepared data folder (default data)")
    p.add_argument("--exproot", default="exp", help="experiment folder (default exp)")
    p.add_argument("--category", required=True, help="category, e.g. car")
    p.add_argument("--mesh-d", default="single", choices=constants.MESH_DIMENSIONS, help="default single")
    p.add_argument("--azimuth-bins", default="", help="unseen-pose models of this mask (default: none)")
    p.add_argument("--occ-level", default="", help="'' (L0, default) or FGL1_BGL1 / FGL2_BGL2 / FGL3_BGL3")
    p.add_argument("--checkpoint", default="last", help="epoch, 'last' (default), 'authors' or a file")
    p.add_argument("--names", nargs="*", default=None, help="image ids (default: the first --num images)")
    p.add_argument("--num", type=int, default=4, help="how many images when --names is not given (default 4)")
    p.add_argument("--gif", action="store_true", help="also write a GIF of the optimisation")
    p.add_argument("--out", default=None, help="output folder (default <exproot>/Visualizations_<mesh_d>)")
    args = p.parse_args(argv)
    setup_logging()
    log = logging.getLogger("nemopose.tools.visualize")
    category = constants.check_category(args.category)
    occ = constants.parse_occlusion_level(args.occ_level)
    exp = Experiment(args.exproot, args.mesh_d, args.azimuth_bins)
    model, meshes, _ = load_trained(exp.resolve_checkpoint(category, args.checkpoint),
                                    layout.cuboid_paths(args.dataroot, args.mesh_d, category))
    dataset = TestDataset(args.dataroot, category, occ_level=occ, mesh_d=args.mesh_d, mesh_index=None)
    map_size = dataset.info.feature_map_size(category)
    wanted = args.names or dataset.names[:args.num]
    out_dir = Path(args.out or exp.visualizations) / f"{category}{occ}"
    split = layout.split_layout(args.dataroot, "val", category, occ)
    tag = " [SYNTHETIC data]" if dataset.info.synthetic else ""
    for name in wanted:
        if name not in dataset.names:
            raise UsageError(f"{name} is not in the {category}{occ} val list")
        item = dataset[dataset.names.index(name)]
        with torch.no_grad():
            fmap = model(item["image"][None]).float()
        m = meshes[item["mesh_index"] - 1]
        solver = MeshPoseSolver(m.verts, m.faces, m.vertex_features, map_size, constants.RENDER_DISTANCE[category],
                                SolverConfig(record_trajectory=args.gif))
        res = solver.solve(fmap, m.clutter)
        pred = {k: float(res[k][0]) for k in ("azimuth", "elevation", "theta", "distance", "loss")}
        gt = {k: float(item[k]) for k in ANGLES}
        gt["distance"] = float(geometry.render_distance(item["distance"], item["resize_rate"], map_size))
        image = np.asarray(Image.open(split.image_path(name)).convert("RGB"))
        png = plot_solution(out_dir / f"{name}.png", image, solver, fmap[0], m.clutter, pred, gt,
                            title=f"{category}{occ} {name}{tag}")
        log.info("wrote %s", png)
        if args.gif:
            gif = save_optimisation_gif(out_dir / f"{name}.gif", image, m.verts, m.faces,
                                        res["trajectory"][0].numpy())
            log.info("wrote %s", gif)
    return 0


if __name__ == "__main__":
    from ..cli import run

    raise SystemExit(run(main))
