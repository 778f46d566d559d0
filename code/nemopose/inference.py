"""Inference: feature maps -> poses -> the accuracy table (METHOD.md §10-12, §15).

``python -m nemopose.inference`` (InferenceNeMo.sh), per category of an occlusion level:

1. feature maps of the val images from the trained network, from one of two sources:
   :func:`network_maps` (``--fused``: straight from the network) or :func:`feature_file_maps`
   (the original's two stages: every map is first written to
   ``Features_<mesh_d>/<cat>/saved_feature_<cat>_<mesh_d>.npz`` with the original's keys
   ``memory_meshNN``, ``clutter_meshNN``, ``names_meshNN`` and one key per image id, then
   read back); both yield the same blocks of ``solve_batch`` images;
2. pose estimation of each block (:func:`nemopose.solve.neural_mesh.solve_over_meshes`, one
   :class:`nemopose.solve.solver.MeshPoseSolver` per mesh);
3. per-image rows (predicted pose with its distance in PASCAL3D+ units, ground truth, error
   in degrees) and the table, CSV, JSON and PNG under ``Accuracy_<mesh_d>/``.

Distribution (METHOD.md §15): under torchrun every rank takes every ``world_size``-th image;
rank 0 gathers the rows and writes the outputs.
"""

from __future__ import annotations

import argparse
import logging
import time
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from . import constants, evaluate, geometry
from .cli import add_categories_argument, add_yes_no_argument
from .cli.progress import progress_bar
from .data import layout
from .data.datasets import TestDataset
from .distributed import DistContext, barrier, init as dist_init, shutdown as dist_shutdown
from .errors import DataNotFound
from .cli import next_steps
from .experiment import CheckpointNotFound, Experiment
from .fetch.checkpoints import fetch_authors_checkpoints
from .solve.neural_mesh import MeshSolution, NeuralMesh, load_trained, solve_over_meshes
from .tools.plots import plot_categories
from .solve.solver import MeshPoseSolver, SolverConfig
from .solve.steps import GRAPH_MODES
from .solve.score import BACKENDS
from .utils import atomic_path, atomic_savez, atomic_write_text, setup_logging

log = logging.getLogger("nemopose.inference")

CPU_SOLVE_BATCH = 64      # images optimised together on the CPU (larger only pages more)
CUDA_SOLVE_BATCH = 4096   # on a GPU: the solver chunks them by free memory


@dataclass
class InferenceConfig:
    """What to evaluate and how; defaults follow the original InferenceNeMo.sh.

    Attributes:
        dataroot, exproot: data and experiment folders.
        categories: categories to evaluate; None = every category with a checkpoint.
        mesh_d: 'single' or 'multi'; azimuth_bins: unseen-pose models (mask) or ''.
        occ_level: '' (L0) or an occlusion level.
        checkpoint: 'last' (highest epoch), an epoch (e.g. 799), 'authors' (the authors'
            released epoch 799) or a file path (may contain '{category}').
        batch_size: feature-extraction batch (8 in the original).
        solve_batch: images solved together; None = by device (64 CPU, 4096 CUDA).
        fused: solve straight from the network's maps (no feature file).
        mesh_selection: 'gt' solves every image with its annotated mesh (the original);
            'best' (multi only) tries every mesh and keeps the lowest final loss.
        device: 'auto', 'cpu' or 'cuda'.
        solver: :class:`SolverConfig` (Adam lr 0.05, 300 steps, ...).
        workers: data-loader workers.
        download, download_mirror, keep_archives: ``checkpoint='authors'``: download the
            released models when missing ('auto') or never ('no'), from this base URL or
            folder instead of Google Drive, keeping the archive afterwards.
    """

    dataroot: str = "data"
    exproot: str = "exp"
    categories: list[str] | None = None
    mesh_d: str = "single"
    azimuth_bins: str = ""
    occ_level: str = ""
    checkpoint: str = "last"
    batch_size: int = 8
    solve_batch: int | None = None
    fused: bool = False
    mesh_selection: str = "gt"
    device: str = "auto"
    solver: SolverConfig = field(default_factory=SolverConfig)
    workers: int = 0
    download: str = "auto"
    download_mirror: str | None = None
    keep_archives: bool = False

    @property
    def experiment(self) -> Experiment:
        return Experiment(self.exproot, self.mesh_d, self.azimuth_bins)


# ----------------------------------------------------------------------------- map sources

Block = tuple[list[dict[str, Any]], torch.Tensor]   # (image items, (b, C, h, w) maps)


def _items(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-image dicts of a TestDataset batch (everything but the image)."""
    keys = ("name", "mesh_index", "cad_index", "azimuth", "elevation", "theta", "distance", "resize_rate")
    return [{k: (batch[k][i] if k == "name" else batch[k][i].item()) for k in keys}
            for i in range(len(batch["name"]))]


def network_maps(model: torch.nn.Module, dataset: TestDataset, indices: list[int], device: torch.device,
                 batch_size: int, workers: int = 0, desc: str = "") -> Iterator[Block]:
    """The test-time maps of ``dataset[indices]``, batch by batch, straight from the network."""
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size,
                                         shuffle=False, num_workers=workers)
    for batch in progress_bar(loader, desc=desc, leave=False, disable=not desc):
        with torch.no_grad():   # not around the yield: the consumer optimises poses
            maps = model(batch["image"].to(device)).float()
        yield _items(batch), maps


def feature_file_maps(path: Path, maps: Iterable[Block], meshes: list[NeuralMesh], block: int) -> Iterator[Block]:
    """The original's two stages: write every map of ``maps`` to the feature file at ``path``
    (streamed, atomic), then yield them back from the file in blocks of ``block`` images."""
    items: list[dict[str, Any]] = []
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        def add(key: str, array: np.ndarray) -> None:
            # np.savez would need every array in memory at once; a category of real PASCAL3D+
            # holds over a gigabyte of maps, so entries are streamed into the zip instead.
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asarray(array), allow_pickle=False)

        for m in meshes:
            add(f"memory_mesh{m.index:02d}", m.vertex_features.numpy())
            add(f"clutter_mesh{m.index:02d}", m.clutter_rows.numpy())
        for batch_items, fmap in maps:
            for item, f in zip(batch_items, fmap.cpu().numpy()):
                add(item["name"], f)
                items.append(item)
        for m in meshes:
            names = [it["name"] for it in items if it["mesh_index"] == m.index]
            add(f"names_mesh{m.index:02d}", np.asarray(names, dtype=np.str_))
    with np.load(path) as stored:
        for start in range(0, len(items), block):
            part = items[start:start + block]
            yield part, torch.from_numpy(np.stack([stored[it["name"]] for it in part]))


def rebatch(blocks: Iterable[Block], size: int) -> Iterator[Block]:
    """Regroup blocks of images into blocks of ``size`` (the last may be smaller)."""
    items, maps, count = [], [], 0
    for block_items, block_maps in blocks:
        items += block_items
        maps.append(block_maps)
        count += len(block_items)
        while count >= size:
            joined = torch.cat(maps)
            yield items[:size], joined[:size]
            items, maps, count = items[size:], [joined[size:]], count - size
    if count:
        yield items, torch.cat(maps)


# ----------------------------------------------------------------------------- solving


def prediction_rows(category: str, occ_level: str, items: list[dict[str, Any]], solutions: list[MeshSolution],
                    map_size: tuple[int, int]) -> list[evaluate.PredictionRow]:
    """The per-image rows of a solved block (errors in degrees, distances in both units)."""
    angles = ("azimuth", "elevation", "theta")
    errors = evaluate.rotation_errors_deg({k: [getattr(s, k) for s in solutions] for k in angles},
                                          {k: [it[k] for it in items] for k in angles})
    return [evaluate.PredictionRow(
        category=category, occ_level=occ_level, name=it["name"], mesh=sol.mesh,
        azimuth=sol.azimuth, elevation=sol.elevation, theta=sol.theta,
        distance=float(geometry.pascal_distance(sol.distance, it["resize_rate"], map_size)),
        render_distance=sol.distance, loss=sol.loss, gt_azimuth=it["azimuth"], gt_elevation=it["elevation"],
        gt_theta=it["theta"], gt_distance=it["distance"], error_deg=float(err))
        for it, sol, err in zip(items, solutions, errors)]


def run_category(cfg: InferenceConfig, category: str, ctx: DistContext) -> list[evaluate.PredictionRow]:
    """Maps, poses and rows of one category (this rank's share of the images)."""
    exp = cfg.experiment
    ckpt_path = exp.resolve_checkpoint(category, cfg.checkpoint)
    model, meshes, _ = load_trained(ckpt_path, layout.cuboid_paths(cfg.dataroot, cfg.mesh_d, category), ctx.device)
    dataset = TestDataset(cfg.dataroot, category, split="val", occ_level=cfg.occ_level, mesh_d=cfg.mesh_d,
                          mesh_index=None)
    map_size = dataset.info.feature_map_size(category)
    solvers = [MeshPoseSolver(m.verts, m.faces, m.vertex_features, map_size, constants.RENDER_DISTANCE[category],
                              cfg.solver, ctx.device) for m in meshes]
    mine = list(range(ctx.rank, len(dataset), ctx.world_size))
    solve_batch = cfg.solve_batch or (CUDA_SOLVE_BATCH if ctx.device.type == "cuda" else CPU_SOLVE_BATCH)
    log.info("%s%s: %d images (%d on this rank), checkpoint %s, maps %dx%d", category, cfg.occ_level,
             len(dataset), len(mine), ckpt_path.name, *map_size)
    source = network_maps(model, dataset, mine, ctx.device, cfg.batch_size, cfg.workers,
                          desc=f"{category}{cfg.occ_level} extract" if ctx.is_main else "")
    if not cfg.fused:
        source = feature_file_maps(exp.feature_file(category, cfg.occ_level, ctx.rank, ctx.world_size), source,
                                   meshes, solve_batch)
    rows: list[evaluate.PredictionRow] = []
    for items, maps in rebatch(source, solve_batch):
        chosen = None if cfg.mesh_selection == "best" else [it["mesh_index"] for it in items]
        solutions = solve_over_meshes(solvers, meshes, maps, chosen)
        rows += prediction_rows(category, cfg.occ_level, items, solutions, map_size)
    return rows


def gather_rows(rows: list[evaluate.PredictionRow], ctx: DistContext) -> list[evaluate.PredictionRow]:
    if not ctx.distributed:
        return rows
    parts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(parts, rows)
    return [r for part in parts for r in part]


# ----------------------------------------------------------------------------- driver


def categories_to_evaluate(cfg: InferenceConfig) -> list[str]:
    """The requested categories, or (None = all) those with a checkpoint and prepared val data;
    says once which prepared categories have no checkpoint (and which checkpoints have no
    data). Raises when there is nothing to evaluate."""
    exp = cfg.experiment
    if cfg.categories is not None:
        if cfg.checkpoint == "last":         # name the whole chain now, not one step at a time
            untrained = [c for c in cfg.categories if not exp.list_checkpoints(c)]
            if untrained:
                trained = exp.trained_categories()
                raise CheckpointNotFound(
                    f"no checkpoint for {', '.join(untrained)} in {exp.checkpoints} (trained there: "
                    f"{', '.join(trained) or 'none'}); " + next_steps.missing_checkpoint_advice(
                        cfg.dataroot, cfg.exproot, untrained, cfg.mesh_d, cfg.occ_level))
        return list(cfg.categories)
    available = list(exp.authors_checkpoints()) if cfg.checkpoint == "authors" else exp.trained_categories()
    prepared = [c for c in constants.CATEGORIES
                if layout.split_layout(cfg.dataroot, "val", c, cfg.occ_level).lists3d(cfg.mesh_d).is_dir()]
    untrained = [c for c in prepared if c not in available]
    if untrained:
        log.warning("no checkpoint in %s for: %s (not trained; skipped)", exp.checkpoints, ", ".join(untrained))
    unprepared = [c for c in available if c not in prepared]
    if unprepared:
        log.warning("no prepared val data in %s for: %s (skipped; run PrepareData.sh)", cfg.dataroot,
                    ", ".join(unprepared))
    categories = [c for c in constants.CATEGORIES if c in available and c in prepared]
    if not categories:
        if not available:
            raise DataNotFound(f"no trained category: no saved_model_<cat>_*.pth in {exp.checkpoints}; " +
                               next_steps.missing_checkpoint_advice(cfg.dataroot, cfg.exproot, None, cfg.mesh_d,
                                                                    cfg.occ_level))
        raise DataNotFound(f"no prepared val data in {cfg.dataroot} for the trained categories "
                           f"({', '.join(available)}); " +
                           next_steps.chain(["prepare", "infer"], dataroot=cfg.dataroot, exproot=cfg.exproot,
                                            categories=available, mesh_d=cfg.mesh_d))
    return categories


def run(cfg: InferenceConfig, ctx: DistContext | None = None) -> evaluate.AccuracyTable | None:
    """Evaluate the categories; rank 0 writes the outputs and returns the table."""
    ctx = ctx or DistContext()
    start = time.time()
    categories = categories_to_evaluate(cfg)
    val_root = layout.split_root(cfg.dataroot, "val", cfg.occ_level)
    if ctx.is_main and layout.load_dataset_info(val_root).synthetic:     # once per run, not per category
        log.warning("the data in %s (%s) is SYNTHETIC (generated), not PASCAL3D+", val_root, cfg.occ_level or "L0")
    all_rows: list[evaluate.PredictionRow] = []
    for category in categories:
        t0 = time.time()
        rows = gather_rows(run_category(cfg, category, ctx), ctx)
        all_rows += rows
        if ctx.is_main:
            m = evaluate.metrics([r.error_deg for r in rows])
            log.info("%s%s: %d images, Pi/6 %.1f, Pi/18 %.1f, MedErr %.1f (%.0f s)", category, cfg.occ_level,
                     m.n, m.acc_pi6, m.acc_pi18, m.med_err, time.time() - t0)
    if not ctx.is_main:
        return None
    return write_results(cfg, categories, all_rows, time.time() - start)


def write_results(cfg: InferenceConfig, categories: list[str], rows: list[evaluate.PredictionRow],
                  seconds: float) -> evaluate.AccuracyTable:
    """The per-image CSV, the original's per-category ``total_error`` npz, and the table
    (txt, json, png) of one occlusion level."""
    exp, level = cfg.experiment, cfg.occ_level or "L0"
    info = layout.load_dataset_info(layout.split_root(cfg.dataroot, "val", cfg.occ_level))
    rows = sorted(rows, key=lambda r: (constants.CATEGORIES.index(r.category), r.name))
    evaluate.save_predictions_csv(exp.predictions_csv(level), rows)
    errors = evaluate.errors_from_rows(rows)
    for category in categories:   # the original's record, in radians (CalAccuracy.py reads it)
        atomic_savez(exp.total_error_file(category, cfg.occ_level),
                     total_error=np.radians(errors.get(category, np.zeros(0))))
    table = evaluate.accuracy_table(errors)
    tag = "SYNTHETIC data (not PASCAL3D+)" if info.synthetic else "PASCAL3D+"
    title = f"NeMo ({cfg.mesh_d} cuboid), occlusion {level}, {tag}"
    reference = constants.published_l0(cfg.mesh_d) if cfg.checkpoint == "authors" and not cfg.occ_level else None
    text = evaluate.format_table(table, title, reference=reference)
    atomic_write_text(exp.accuracy_file(level, "txt"), text + "\n")
    evaluate.save_table_json(exp.accuracy_file(level, "json"), table, level=level, mesh_d=cfg.mesh_d,
                             synthetic=info.synthetic, categories=categories, checkpoint=cfg.checkpoint,
                             seconds=round(seconds, 1), published=reference)
    plot_categories(exp.accuracy_file(level, "png"), errors, title)
    log.info("wrote %s/{predictions,accuracy}_%s.*", exp.accuracy, level)
    return table


def build_parser() -> argparse.ArgumentParser:
    """The command line; every default and its help text come from :class:`InferenceConfig`
    and :class:`SolverConfig`."""
    d = InferenceConfig()
    s = SolverConfig()
    p = argparse.ArgumentParser(description="NeMo inference: features, pose estimation, accuracy table.")
    p.add_argument("--dataroot", default=d.dataroot, help=f"prepared data folder (default {d.dataroot})")
    p.add_argument("--exproot", default=d.exproot, help=f"experiment folder (default {d.exproot})")
    add_categories_argument(p, "every category with a checkpoint")
    p.add_argument("--mesh-d", default=d.mesh_d, choices=constants.MESH_DIMENSIONS,
                   help=f"cuboid type (default {d.mesh_d})")
    p.add_argument("--azimuth-bins", default=d.azimuth_bins,
                   help="evaluate the unseen-pose models of this mask (default: none)")
    p.add_argument("--occ-level", default=d.occ_level, help="'' / L0 (default), FGL1_BGL1, FGL2_BGL2 or FGL3_BGL3")
    p.add_argument("--checkpoint", default=d.checkpoint,
                   help=f"'last', an epoch (e.g. 799), 'authors' (their released models, epoch 799; "
                        f"downloaded when missing) or a file (may contain {{category}}) (default {d.checkpoint})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"extraction batch (default {d.batch_size})")
    p.add_argument("--solve-batch", type=int, default=d.solve_batch,
                   help=f"images solved together (default: {CPU_SOLVE_BATCH} on CPU, {CUDA_SOLVE_BATCH} on CUDA)")
    add_yes_no_argument(p, "--fused", dest="fused", default=d.fused,
                        help="solve from the network's maps without a feature file")
    p.add_argument("--mesh-selection", default=d.mesh_selection, choices=("gt", "best"),
                   help=f"multi meshes: annotated mesh (gt, the original) or lowest loss (best) "
                        f"(default {d.mesh_selection})")
    p.add_argument("--device", default=d.device, help=f"auto, cpu or cuda (default {d.device})")
    p.add_argument("--workers", type=int, default=d.workers, help=f"data-loader workers (default {d.workers})")
    p.add_argument("--steps", "--epochs", dest="steps", type=int, default=s.steps,
                   help=f"Adam steps of the pose solver (--epochs: the original's name) (default {s.steps})")
    p.add_argument("--lr", type=float, default=s.lr, help=f"Adam learning rate of the pose solver (default {s.lr})")
    p.add_argument("--turn-off-clutter", action="store_true", help="loss without the clutter model")
    p.add_argument("--num-starts", type=int, default=s.num_starts,
                   help=f"optimise from the k best initial poses, keep the lowest loss (default {s.num_starts})")
    p.add_argument("--early-stop-tol", type=float, default=s.early_stop_tol,
                   help=f"stop when the losses change less than this over {s.early_stop_patience} steps "
                        f"(default: never)")
    p.add_argument("--solver-backend", default=s.backend, choices=BACKENDS,
                   help=f"pose-loss implementation: auto (Triton kernels on CUDA, PyTorch on the CPU), "
                        f"torch or triton (default {s.backend})")
    p.add_argument("--cuda-graphs", default=s.cuda_graphs, choices=GRAPH_MODES,
                   help=f"auto: on CUDA with the Triton backend, each solver step replays one captured CUDA graph; "
                        f"off: eager steps (default {s.cuda_graphs})")
    p.add_argument("--perspective-correct", action="store_true",
                   help="perspective-correct barycentrics (PyTorch3D >= 0.3 default; the paper used screen-space)")
    p.add_argument("--download", default=d.download, choices=("auto", "no"),
                   help=f"--checkpoint authors: download their models when missing (auto) or never (no) "
                        f"(default {d.download})")
    p.add_argument("--download-mirror", default=d.download_mirror,
                   help="base URL or folder holding NeMo_Single_799.zip / NeMo_Multi_799.zip (default: Google Drive)")
    add_yes_no_argument(p, "--keep-archives", dest="keep_archives", default=d.keep_archives,
                        help="keep the downloaded archive")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


def config_from_args(args: argparse.Namespace) -> InferenceConfig:
    solver = replace(SolverConfig(), steps=args.steps, lr=args.lr, use_clutter=not args.turn_off_clutter,
                     num_starts=args.num_starts, early_stop_tol=args.early_stop_tol,
                     perspective_correct=args.perspective_correct, backend=args.solver_backend,
                     cuda_graphs=args.cuda_graphs)
    categories = None if constants.wants_all(args.categories) else constants.parse_categories(args.categories)
    return InferenceConfig(dataroot=args.dataroot, exproot=args.exproot, categories=categories, mesh_d=args.mesh_d,
                           azimuth_bins=args.azimuth_bins, occ_level=constants.parse_occlusion_level(args.occ_level),
                           checkpoint=args.checkpoint, batch_size=args.batch_size, solve_batch=args.solve_batch,
                           fused=args.fused, mesh_selection=args.mesh_selection, device=args.device, solver=solver,
                           workers=args.workers, download=args.download, download_mirror=args.download_mirror,
                           keep_archives=args.keep_archives)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    cfg = config_from_args(args)
    ctx = dist_init(cfg.device)
    try:
        if cfg.checkpoint == "authors":      # rank 0 downloads, the others wait
            if ctx.is_main:
                fetch_authors_checkpoints(cfg.experiment, mirror=cfg.download_mirror, download=cfg.download,
                                          keep_archive=cfg.keep_archives)
            barrier(ctx)
        if run(cfg, ctx) is not None:   # rank 0: print the table it wrote
            print(cfg.experiment.accuracy_file(cfg.occ_level, "txt").read_text(), end="", flush=True)
    finally:
        dist_shutdown()
    return 0


if __name__ == "__main__":
    from .cli import run as run_cli

    raise SystemExit(run_cli(main))
