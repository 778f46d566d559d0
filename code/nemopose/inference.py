"""Inference: feature extraction, pose estimation and the accuracy table (SPEC 10-12, 15).

``python -m nemopose.inference`` runs, for each category, mesh and (optionally) occlusion
level:

1. feature extraction (SPEC 10): the network's test-time maps of the val images, written
   per category to ``<exproot>/Features_<mesh_d>/<cat>/saved_feature_<cat>_<mesh_d>.npz``
   (occluded: ``<cat>_occ/<LEVEL>_saved_feature_...``) with the original's keys
   ``memory_meshNN``, ``clutter_meshNN``, ``names_meshNN`` and one key per image id;
   ``--fused`` skips the file and solves straight from the network's output;
2. pose estimation (SPEC 11) with :class:`nemopose.pose.MeshPoseSolver`, batched;
3. evaluation (SPEC 12): per-image predictions (CSV), per-category errors and the table
   (text + JSON) under ``<exproot>/Accuracy_<mesh_d>/``.

Distribution (SPEC 15): under torchrun every rank takes every ``world_size``-th image,
extracts and solves its share; rank 0 gathers the per-image results and writes the table.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from . import constants, evaluate, mesh
from .checkpoint import experiment_dir, final_checkpoint, list_checkpoints, load_network
from .data import layout
from .data.datasets import TestDataset
from .distributed import DistContext, init as dist_init, shutdown as dist_shutdown
from .pose import MeshPoseSolver, SolverConfig
from .utils import atomic_path, atomic_savez, atomic_write_text, setup_logging

log = logging.getLogger("nemopose.inference")


@dataclass
class InferenceConfig:
    """What to evaluate and how; defaults follow the original InferenceNeMo.sh.

    Attributes:
        dataroot, exproot: data and experiment folders.
        categories: categories to evaluate.
        mesh_d: 'single' or 'multi'.
        occ_level: '' (L0) or an occlusion level.
        checkpoint: epoch number (e.g. 799), 'last' (highest epoch found) or a file path;
            a path may contain '{category}'.
        batch_size: feature-extraction batch (8 in the original).
        solve_batch: images solved together (memory permitting).
        fused: solve straight from the network's maps (no feature file).
        mesh_selection: 'gt' solves every image with its annotated mesh (the original);
            'best' (multi only) tries every mesh and keeps the lowest final loss.
        device: 'auto', 'cpu' or 'cuda'.
        solver: :class:`SolverConfig` (Adam lr 0.05, 300 steps, ...).
        workers: data-loader workers.
    """

    dataroot: str = "data"
    exproot: str = "exp"
    categories: list[str] = field(default_factory=lambda: list(constants.CATEGORIES))
    mesh_d: str = "single"
    occ_level: str = ""
    checkpoint: str = "last"
    batch_size: int = 8
    solve_batch: int = 64
    fused: bool = False
    mesh_selection: str = "gt"
    device: str = "auto"
    solver: SolverConfig = field(default_factory=SolverConfig)
    workers: int = 0


# ----------------------------------------------------------------------------- paths


def feature_file(exproot: str | Path, mesh_d: str, category: str, occ_level: str = "", rank: int = 0,
                 world_size: int = 1) -> Path:
    """The original's feature-file location; ranks of a distributed run write parts."""
    base = Path(exproot) / f"Features_{mesh_d}"
    name = f"saved_feature_{category}_{mesh_d}"
    if world_size > 1:
        name += f".part{rank}of{world_size}"
    if occ_level:
        return base / f"{category}_occ" / f"{occ_level}_{name}.npz"
    return base / category / f"{name}.npz"


def accuracy_dir(exproot: str | Path, mesh_d: str) -> Path:
    return Path(exproot) / f"Accuracy_{mesh_d}"


def resolve_checkpoint(cfg: InferenceConfig, category: str) -> Path:
    """The checkpoint file for ``category``: an epoch number, 'last', or a path."""
    folder = experiment_dir(cfg.exproot, cfg.mesh_d)
    spec = str(cfg.checkpoint)
    if spec == "last":
        return final_checkpoint(folder, category)
    if spec.isdigit():
        for epoch, path in list_checkpoints(folder, category):
            if epoch == int(spec):
                return path
        raise FileNotFoundError(f"no checkpoint of epoch {spec} for {category} in {folder}")
    path = Path(spec.format(category=category))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


# ----------------------------------------------------------------------------- features


class FeatureWriter:
    """Writes an npz incrementally (one array at a time), atomically on close.

    ``np.savez`` needs every array in memory at once; a category of real PASCAL3D+ holds
    over a gigabyte of feature maps, so entries are streamed into the zip instead. The
    result is an ordinary ``.npz`` that ``np.load`` reads (lazily).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self._zip = zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def add(self, key: str, array: np.ndarray) -> None:
        with self._zip.open(f"{key}.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, np.asarray(array), allow_pickle=False)

    def close(self) -> None:
        self._zip.close()
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        self._zip.close()
        try:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass


def iterate_maps(model: torch.nn.Module, dataset: torch.utils.data.Dataset, indices: list[int], device: torch.device,
                 batch_size: int, workers: int = 0, desc: str = "") -> Iterator[tuple[dict, torch.Tensor]]:
    """Yield (batch of dataset items, (b, C, h, w) feature maps) over ``indices``."""
    subset = torch.utils.data.Subset(dataset, indices)
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers)
    for batch in tqdm(loader, desc=desc, leave=False, disable=not desc):
        with torch.no_grad():   # not around the yield: the caller may optimise poses
            fmap = model(batch["image"].to(device)).float()
        yield batch, fmap


# ----------------------------------------------------------------------------- solving


@dataclass
class MeshContext:
    """A neural mesh: geometry, vertex features and the clutter vector."""

    index: int
    verts: np.ndarray
    faces: np.ndarray
    vertex_features: torch.Tensor
    clutter: torch.Tensor


def clutter_vector(clutter_rows: torch.Tensor) -> torch.Tensor:
    """The clutter model's vector: the normalised mean of the bank's clutter rows."""
    mean = clutter_rows.float().mean(0)
    return mean / mean.norm()


def load_meshes(cfg: InferenceConfig, category: str, memories: list[torch.Tensor]) -> list[MeshContext]:
    paths = layout.cuboid_paths(cfg.dataroot, cfg.mesh_d, category)
    if len(paths) != len(memories):
        raise ValueError(f"{category}: {len(paths)} meshes in {paths[0].parent} but the checkpoint holds "
                         f"{len(memories)} banks; was it trained with mesh dimension {cfg.mesh_d!r}?")
    out = []
    for k, (path, memory) in enumerate(zip(paths, memories), start=1):
        verts, faces = mesh.load_off(path)
        n = len(verts)
        out.append(MeshContext(k, verts, faces, memory[:n].float(), clutter_vector(memory[n:])))
    return out


def gt_pose(item: dict, i: int) -> dict[str, float]:
    return {k: float(item[k][i]) for k in ("azimuth", "elevation", "theta", "distance")}


def solve_block(solvers: dict[int, MeshPoseSolver], meshes: list[MeshContext], maps: torch.Tensor,
                mesh_index: list[int], mesh_selection: str) -> list[dict[str, Any]]:
    """Solve a block of images; each with its annotated mesh, or every mesh ('best')."""
    results: list[dict[str, Any] | None] = [None] * maps.shape[0]
    candidates = [m.index for m in meshes] if mesh_selection == "best" else None
    for m in meshes:
        rows = [i for i, k in enumerate(mesh_index) if (candidates is not None or k == m.index)]
        if not rows:
            continue
        res = solvers[m.index].solve(maps[rows], m.clutter)
        for j, i in enumerate(rows):
            cand = {k: float(v[j]) for k, v in res.items() if v.dim() == 1}
            cand["mesh"] = m.index
            if results[i] is None or cand["loss"] < results[i]["loss"]:
                results[i] = cand
    return results  # type: ignore[return-value]


def run_category(cfg: InferenceConfig, category: str, ctx: DistContext) -> list[dict[str, Any]]:
    """Extract, solve and score one category (this rank's share of the images)."""
    ckpt_path = resolve_checkpoint(cfg, category)
    model, memories, info = load_network(ckpt_path, device=ctx.device)
    meshes = load_meshes(cfg, category, memories)
    dataset = TestDataset(cfg.dataroot, category, split="val", occ_level=cfg.occ_level, mesh_d=cfg.mesh_d,
                          mesh_index=None)
    if dataset.info.synthetic and ctx.is_main:
        log.warning("%s: the dataset is SYNTHETIC (generated), not PASCAL3D+", category)
    h, w = dataset.image_size
    map_size = (h // constants.DOWNSAMPLE_RATE, w // constants.DOWNSAMPLE_RATE)
    solvers = {m.index: MeshPoseSolver(m.verts, m.faces, m.vertex_features, map_size,
                                       constants.RENDER_DISTANCE[category], cfg.solver, ctx.device) for m in meshes}
    mine = list(range(ctx.rank, len(dataset), ctx.world_size))
    desc = f"{category}{cfg.occ_level} extract" if ctx.is_main else ""
    log.info("%s%s: %d images (%d on this rank), checkpoint %s, maps %dx%d", category, cfg.occ_level,
             len(dataset), len(mine), ckpt_path.name, *map_size)

    rows: list[dict[str, Any]] = []

    def solve_and_record(maps: torch.Tensor, items: list[dict]) -> None:
        # the mesh list an image came from: mesh01 (single) or its CAD model's mesh (multi)
        mesh_index = [it["mesh_index"] for it in items]
        for start in range(0, maps.shape[0], cfg.solve_batch):
            sl = slice(start, start + cfg.solve_batch)
            sols = solve_block(solvers, meshes, maps[sl], mesh_index[sl], cfg.mesh_selection)
            for it, sol in zip(items[sl], sols):
                err = evaluate.rotation_errors({k: [sol[k]] for k in ("azimuth", "elevation", "theta")},
                                               {k: [it[k]] for k in ("azimuth", "elevation", "theta")})[0]
                rows.append({"category": category, "occ_level": cfg.occ_level, "name": it["name"],
                             "mesh": sol["mesh"], **{k: sol[k] for k in ("azimuth", "elevation", "theta",
                                                                         "distance", "loss")},
                             **{f"gt_{k}": it[k] for k in ("azimuth", "elevation", "theta", "distance")},
                             "error_deg": math.degrees(err)})

    def items_of(batch: dict) -> list[dict]:
        n = len(batch["name"])
        return [{"name": batch["name"][i], "mesh_index": int(batch["mesh_index"][i]),
                 "cad_index": int(batch["cad_index"][i]), **gt_pose(batch, i)} for i in range(n)]

    if cfg.fused:
        pending_maps, pending_items = [], []
        for batch, fmap in iterate_maps(model, dataset, mine, ctx.device, cfg.batch_size, cfg.workers, desc):
            pending_maps.append(fmap)
            pending_items += items_of(batch)
            if len(pending_items) >= cfg.solve_batch:
                solve_and_record(torch.cat(pending_maps), pending_items)
                pending_maps, pending_items = [], []
        if pending_items:
            solve_and_record(torch.cat(pending_maps), pending_items)
        return rows

    # Faithful two-stage path: write the feature file, then solve from it.
    path = feature_file(cfg.exproot, cfg.mesh_d, category, cfg.occ_level, ctx.rank, ctx.world_size)
    writer = FeatureWriter(path)
    names_per_mesh: dict[int, list[str]] = {m.index: [] for m in meshes}
    all_items: list[dict] = []
    try:
        for m in meshes:
            writer.add(f"memory_mesh{m.index:02d}", memories[m.index - 1][:len(m.verts)].numpy())
            writer.add(f"clutter_mesh{m.index:02d}", memories[m.index - 1][len(m.verts):].numpy())
        for batch, fmap in iterate_maps(model, dataset, mine, ctx.device, cfg.batch_size, cfg.workers, desc):
            for it, f in zip(items_of(batch), fmap.cpu().numpy()):
                writer.add(it["name"], f)
                names_per_mesh.setdefault(it["mesh_index"], []).append(it["name"])
                all_items.append(it)
        for k, names in names_per_mesh.items():
            writer.add(f"names_mesh{k:02d}", np.asarray(names, dtype=np.str_))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    del model
    with np.load(path) as stored:
        for start in range(0, len(all_items), cfg.solve_batch):
            block = all_items[start:start + cfg.solve_batch]
            maps = torch.from_numpy(np.stack([stored[it["name"]] for it in block]))
            solve_and_record(maps, block)
    return rows


def gather_rows(rows: list[dict], ctx: DistContext) -> list[dict]:
    if not ctx.distributed:
        return rows
    parts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(parts, rows)
    return [r for part in parts for r in part]


# ----------------------------------------------------------------------------- driver


def run(cfg: InferenceConfig, ctx: DistContext | None = None) -> evaluate.AccuracyTable | None:
    """Evaluate every category; rank 0 writes the outputs and returns the table."""
    ctx = ctx or DistContext()
    start = time.time()
    all_rows: list[dict] = []
    for category in cfg.categories:
        t0 = time.time()
        rows = gather_rows(run_category(cfg, category, ctx), ctx)
        all_rows += rows
        if ctx.is_main:
            m = evaluate.metrics(np.radians([r["error_deg"] for r in rows]))
            log.info("%s%s: %d images, Pi/6 %.1f, Pi/18 %.1f, MedErr %.1f (%.0f s)", category, cfg.occ_level,
                     m.n, m.acc_pi6, m.acc_pi18, m.med_err, time.time() - t0)
    if not ctx.is_main:
        return None
    out_dir = accuracy_dir(cfg.exproot, cfg.mesh_d)
    level = cfg.occ_level or "L0"
    info = layout.load_dataset_info(layout.split_root(cfg.dataroot, "val", cfg.occ_level))
    all_rows.sort(key=lambda r: (constants.CATEGORIES.index(r["category"]), r["name"]))
    evaluate.save_predictions_csv(out_dir / f"predictions_{level}.csv", all_rows)
    for category in cfg.categories:
        errors = np.radians([r["error_deg"] for r in all_rows if r["category"] == category])
        # the original's per-category record (CalAccuracy.py reads ``total_error``)
        atomic_savez(out_dir / f"{category}{cfg.occ_level}.npz", total_error=errors)
    table = evaluate.accuracy_table(evaluate.errors_from_rows(all_rows))
    tag = "SYNTHETIC data (not PASCAL3D+)" if info.synthetic else "PASCAL3D+"
    title = f"NeMo ({cfg.mesh_d} cuboid), occlusion {level}, {tag}"
    text = evaluate.format_table(table, title)
    atomic_write_text(out_dir / f"accuracy_{level}.txt", text + "\n")
    evaluate.save_table_json(out_dir / f"accuracy_{level}.json", table, level=level, mesh_d=cfg.mesh_d,
                             synthetic=info.synthetic, categories=cfg.categories,
                             seconds=round(time.time() - start, 1))
    log.info("wrote %s/{predictions,accuracy}_%s.*", out_dir, level)
    return table


def build_parser() -> argparse.ArgumentParser:
    d = InferenceConfig()
    s = SolverConfig()
    p = argparse.ArgumentParser(description="NeMo inference: features, pose estimation, accuracy table.")
    p.add_argument("--dataroot", default=d.dataroot, help=f"prepared data folder (default {d.dataroot})")
    p.add_argument("--exproot", default=d.exproot, help=f"experiment folder (default {d.exproot})")
    p.add_argument("--categories", nargs="+", default=["all"], help="categories or 'all' (default all)")
    p.add_argument("--mesh-d", default=d.mesh_d, choices=constants.MESH_DIMENSIONS, help="cuboid type (default single)")
    p.add_argument("--occ-level", default="", help="'' / L0 (default), FGL1_BGL1, FGL2_BGL2 or FGL3_BGL3")
    p.add_argument("--checkpoint", default=d.checkpoint,
                   help="epoch (e.g. 799), 'last' (default) or a file (may contain {category})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="extraction batch (default 8)")
    p.add_argument("--solve-batch", type=int, default=d.solve_batch, help="images solved together (default 64)")
    p.add_argument("--fused", action="store_true", help="solve from the network's maps without a feature file")
    p.add_argument("--mesh-selection", default=d.mesh_selection, choices=("gt", "best"),
                   help="multi meshes: annotated mesh (gt, default, the original) or lowest loss (best)")
    p.add_argument("--device", default=d.device, help="auto (default), cpu or cuda")
    p.add_argument("--workers", type=int, default=d.workers, help="data-loader workers (default 0)")
    p.add_argument("--epochs", "--steps", dest="steps", type=int, default=s.steps, help="Adam steps (default 300)")
    p.add_argument("--lr", type=float, default=s.lr, help="Adam learning rate (default 0.05)")
    p.add_argument("--turn-off-clutter", action="store_true", help="loss without the clutter model")
    p.add_argument("--num-starts", type=int, default=s.num_starts,
                   help="optimise from the k best initial poses, keep the lowest loss (default 1)")
    p.add_argument("--early-stop-tol", type=float, default=None,
                   help="stop when the losses change less than this over 20 steps (default: never)")
    p.add_argument("--perspective-correct", action="store_true",
                   help="perspective-correct barycentrics (PyTorch3D >= 0.3 default; the paper used screen-space)")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


def config_from_args(args: argparse.Namespace) -> InferenceConfig:
    solver = replace(SolverConfig(), steps=args.steps, lr=args.lr, use_clutter=not args.turn_off_clutter,
                     num_starts=args.num_starts, early_stop_tol=args.early_stop_tol,
                     perspective_correct=args.perspective_correct)
    return InferenceConfig(dataroot=args.dataroot, exproot=args.exproot,
                           categories=constants.parse_categories(args.categories), mesh_d=args.mesh_d,
                           occ_level=constants.parse_occlusion_level(args.occ_level), checkpoint=args.checkpoint,
                           batch_size=args.batch_size, solve_batch=args.solve_batch, fused=args.fused,
                           mesh_selection=args.mesh_selection, device=args.device, solver=solver,
                           workers=args.workers)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    cfg = config_from_args(args)
    ctx = dist_init(cfg.device)
    try:
        if run(cfg, ctx) is not None:   # rank 0: print the table it wrote
            level = cfg.occ_level or "L0"
            print((accuracy_dir(cfg.exproot, cfg.mesh_d) / f"accuracy_{level}.txt").read_text(), end="", flush=True)
    finally:
        dist_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
