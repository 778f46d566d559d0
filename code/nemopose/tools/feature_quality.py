"""How good are trained features? Vertex correspondence on held-out images (no pose solve).

For every visible vertex of every image of a split (3D annotations), with the trained network's
test-time map F and the bank's vertex features M:

- ``nearest``: the bank vertex most similar to F at the vertex's cell is the vertex itself
  (``exact``) or one of its ``k`` nearest mesh vertices in 3D (``within_k``; several vertices
  share one stride-8 cell, so exact identity is ill-posed);
- ``pck``: the original ExtractFeatures.py ``--eval_kp_score`` check: the arg-max of the
  similarity heat map ``<M_v, F>`` inside the object box lies within ``0.1 * max(box h, w)``
  pixels of the vertex (cell centres ``cell * 8 + 4``).

CLI: ``python -m nemopose.tools.feature_quality --dataroot data --exproot exp --categories car``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import constants
from ..cli import add_categories_argument
from ..data import layout
from ..data.datasets import TestDataset
from ..experiment import Experiment
from ..cli.progress import progress_bar
from ..train.model import STRIDE, NeMoNet, vertex_cell_index
from ..solve.neural_mesh import load_trained
from ..utils import atomic_write_json, setup_logging

log = logging.getLogger(__name__)


def neighbour_sets(vertices: np.ndarray, k: int) -> torch.Tensor:
    """``(nV, k)`` indices of each vertex's k nearest vertices in 3D, itself first (cuboid
    meshes duplicate their edge vertices, so a tie must not push a vertex out of its own set)."""
    v = torch.as_tensor(vertices, dtype=torch.float64)
    dist = torch.cdist(v, v)
    dist.fill_diagonal_(-1.0)
    return dist.topk(k, largest=False).indices


@torch.no_grad()
def vertex_correspondence(model: NeMoNet, vertex_memory: torch.Tensor, dataset: TestDataset,
                          neighbours: torch.Tensor, device: torch.device | str = "cpu",
                          batch_size: int = 8, pck_ratio: float = 0.1) -> dict[str, Any]:
    """Correspondence scores of one mesh over a dataset (with_vertices=True).

    Args:
        vertex_memory: ``(nV, d)`` the bank's vertex features.
        neighbours: ``(nV, k)`` from :func:`neighbour_sets`.
    Returns:
        dict with ``exact``, ``within_k``, ``pck`` (fractions of visible vertices), ``visible``
        (their count) and ``images``.
    """
    memory = torch.nn.functional.normalize(vertex_memory.to(device, torch.float32), dim=1)
    neighbours = neighbours.to(device)
    exact = within = pck = total = 0
    for batch in DataLoader(dataset, batch_size=batch_size):
        fmap = model(batch["image"].to(device))                              # (B, d, h, w)
        b, d, h, w = fmap.shape
        pixels = batch["vertex_pixels"].to(device)                            # (B, nV, 2)
        visible = batch["visible"].to(device)                                 # (B, nV)
        cells = vertex_cell_index(pixels, (h * STRIDE, w * STRIDE))          # (B, nV)
        flat = fmap.flatten(2)                                                # (B, d, h*w)
        at_vertex = torch.gather(flat, 2, cells.unsqueeze(1).expand(-1, d, -1)).transpose(1, 2)  # (B, nV, d)
        nearest = (at_vertex @ memory.t()).argmax(-1)                         # (B, nV)
        target = torch.arange(memory.shape[0], device=device).expand_as(nearest)
        exact += int(((nearest == target) & visible).sum())
        hit = (neighbours[target] == nearest.unsqueeze(-1)).any(-1)
        within += int((hit & visible).sum())
        # PCK of the heat-map arg-max inside the object box
        heat = torch.einsum("vd,bdn->bvn", memory, flat)                     # (B, nV, h*w)
        box = batch["box_obj"].to(device)                                     # (B, 6) y0 y1 x0 x1 H W
        rows = torch.arange(h, device=device) * STRIDE + STRIDE // 2
        cols = torch.arange(w, device=device) * STRIDE + STRIDE // 2
        inside = ((rows[None, :, None] >= box[:, 0, None, None]) & (rows[None, :, None] < box[:, 1, None, None])
                  & (cols[None, None, :] >= box[:, 2, None, None]) & (cols[None, None, :] < box[:, 3, None, None]))
        heat = heat.masked_fill(~inside.flatten(1).unsqueeze(1), float("-inf"))
        best = heat.argmax(-1)                                                # (B, nV)
        best_px = torch.stack([rows[best // w], cols[best % w]], dim=-1).float()
        dist = (best_px - pixels).norm(dim=-1)
        thr = pck_ratio * torch.maximum(box[:, 1] - box[:, 0], box[:, 3] - box[:, 2]).float()
        pck += int(((dist <= thr[:, None]) & visible).sum())
        total += int(visible.sum())
    return {"exact": exact / max(total, 1), "within_k": within / max(total, 1), "pck": pck / max(total, 1),
            "visible": total, "images": len(dataset)}


def evaluate_category(dataroot: str | Path, exproot: str | Path, category: str, mesh_d: str = "single",
                      split: str = "val", k: int = 8, device: str = "cpu", checkpoint_path: str | None = None) -> dict:
    """Scores of a category's final checkpoint on ``split``, averaged over its meshes by visible count."""
    path = Path(checkpoint_path) if checkpoint_path else Experiment(exproot, mesh_d).final_checkpoint(category)
    model, meshes, _ = load_trained(path, layout.cuboid_paths(dataroot, mesh_d, category), device)
    totals = {"exact": 0.0, "within_k": 0.0, "pck": 0.0, "visible": 0, "images": 0}
    lay = layout.split_layout(dataroot, split, category)
    for mesh in meshes:
        if not lay.mesh_list_path(mesh_d, mesh.index).is_file() or \
                not layout.read_list(lay.mesh_list_path(mesh_d, mesh.index)):
            continue
        dataset = TestDataset(dataroot, category, split=split, mesh_d=mesh_d, mesh_index=mesh.index,
                              with_vertices=True)
        scores = vertex_correspondence(model, mesh.vertex_features, dataset, neighbour_sets(mesh.verts, k), device)
        for key in ("exact", "within_k", "pck"):
            totals[key] += scores[key] * scores["visible"]
        totals["visible"] += scores["visible"]
        totals["images"] += scores["images"]
    for key in ("exact", "within_k", "pck"):
        totals[key] /= max(totals["visible"], 1)
    return {"category": category, "checkpoint": str(path), "k": k, **totals}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nemopose.tools.feature_quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", default="./data", help="prepared datasets (default ./data)")
    p.add_argument("--exproot", default="./exp", help="experiments folder of TrainNeMo.sh (default ./exp)")
    add_categories_argument(p, "every category with a checkpoint")
    p.add_argument("--mesh-d", dest="mesh_d", default="single", choices=constants.MESH_DIMENSIONS, help="default single")
    p.add_argument("--split", default="val", choices=("train", "val"), help="default val")
    p.add_argument("--k", type=int, default=8, help="neighbourhood size of within_k (default 8)")
    p.add_argument("--device", default="cpu", help="default cpu")
    p.add_argument("--output", default=None, help="also write the scores to this JSON file")
    args = p.parse_args(argv)
    setup_logging()
    categories = (Experiment(args.exproot, args.mesh_d).trained_categories() if constants.wants_all(args.categories)
                  else constants.parse_categories(args.categories))
    rows = []
    for cat in progress_bar(categories, desc="feature quality"):
        rows.append(evaluate_category(args.dataroot, args.exproot, cat, args.mesh_d, args.split, args.k, args.device))
    print(f"{'category':<12} {'images':>6} {'visible':>8} {'exact':>7} {'within_' + str(args.k):>9} {'PCK@0.1':>8}")
    for r in rows:
        print(f"{r['category']:<12} {r['images']:>6} {r['visible']:>8} {100 * r['exact']:>6.1f}% "
              f"{100 * r['within_k']:>8.1f}% {100 * r['pck']:>7.1f}%")
    if args.output:
        atomic_write_json(args.output, rows)
    return 0


if __name__ == "__main__":
    from ..cli import run

    sys.exit(run(main))
