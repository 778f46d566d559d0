"""Train NeMo's feature extractor and neural-mesh banks, one model per category (SPEC 9, 15).

Per category: one network; per mesh (``single``: one cuboid, ``multi``: one per CAD model) a
training list ``lists3D_<mesh_d>/<cat>/meshNN.txt`` and a :class:`~nemopose.bank.FeatureBank`.
Each epoch loops over the meshes; each iteration extracts the features at the vertex cells
and at ``num_noise`` clutter cells per image, computes the loss against the bank as it was,
updates the bank with the (all-gathered) global batch and back-propagates.

Faithful defaults (``TrainConfig``) and the original's quirks, each in a named helper:
:func:`original_lr` (the learning rate is set to ``lr * 0.2`` at every epoch with
``(epoch - 1) % 10 == 0``, which is not cumulative) and :func:`original_should_step`
(backward every iteration, optimiser step when the global iteration counter ``% 10 == 0``,
so the first step follows a single backward).

Distributed (torchrun): DDP over the network; ``batch_size`` is the GLOBAL batch, split
across ranks in contiguous chunks; every rank gathers the global batch's features and weights
and applies the same bank update, so banks stay identical. The loss is normalised by global
counts so that DDP's gradient average equals the single-process gradient.

Randomness is keyed, not streamed: the shuffling of each (epoch, mesh) and the clutter cells
of each (epoch, mesh, sample) come from seeds derived from ``seed``, so a run is reproducible,
independent of the number of ranks and resumable exactly.

CLI: ``python -m nemopose.train --dataroot data --categories car --preset faithful``
(see ``--help``; TrainNeMo.sh drives it).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from . import checkpoint, constants, distributed
from .bank import FeatureBank, nemo_loss
from .data import layout
from .data.datasets import TrainingDataset, mesh_list_path
from .distributed import DistContext
from .mesh import load_off
from .model import STRIDE, NeMoNet, recalibrate_batchnorm, sample_clutter_index, vertex_cell_index
from .utils import append_jsonl, atomic_write_json, seed_everything, setup_logging

log = logging.getLogger(__name__)

LR_SCHEDULES = ("original", "step", "cosine", "constant")


@dataclass
class TrainConfig:
    """Training settings; the defaults are the original TrainNeMo.py/.sh values."""

    # data and output
    dataroot: str = "./data"
    exproot: str = "./exp"
    category: str = "car"
    mesh_d: str = "single"
    azimuth_bins: str = ""                # unseen-pose setting, e.g. 'TFFTTFFT' (the original's azum_sel)
    # network
    backbone: str = "resnetext"           # 'light' for CPU demos only
    pretrained: str = "imagenet"          # 'imagenet' (local torch cache) | 'random' | path
    d_feature: int = 128
    light_widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    light_norm: str = "batch"             # 'group': GroupNorm (batch-independent)
    # optimisation
    batch_size: int = 108                 # global batch (the original: 108 over its GPUs)
    total_epochs: int = 800
    lr: float = 1e-4
    weight_decay: float = 1e-4            # Adam's L2 term (not AdamW)
    lr_schedule: str = "original"         # see original_lr; 'step' = true step decay
    update_lr_epoch_n: int = 10
    update_lr: float = 0.2
    accumulate: int = 10                  # optimiser step every 10 iterations (quirk: see original_should_step)
    accumulation: str = "original"        # 'original' | 'aligned' (step after every `accumulate` backwards)
    # bank and loss
    T: float = 0.07
    distance_thr: float = 48.0            # pixels of the faithful (scale 1) crops
    scale_distance_thr: bool = True       # times the dataset's image_scale (1 for real data)
    weight_noise: float = 5e-3
    noise_weight: float = 0.1             # weight of the clutter regulariser
    num_noise: int = 5
    max_group: int = 512
    momentum: float = 0.9                 # bank momentum (the original's adj_momentum)
    bank_mean: str = "batch"              # quirk: divide by the batch size; 'visible' = corrected
    vertex_weights: str = "original"      # quirk: 0/1 weights; 'weighted' keeps kp_weights
    # checkpoints and runtime
    checkpoint_every: int = 200           # saved_model_<cat>_<epoch> at epochs 199, 399, ...
    save_final: bool = False              # also save after the last epoch
    resume_every: int = 10                # rolling resume_<cat>_<epoch>.pth every N epochs (0: off)
    workers: int = 8
    cache_images: bool = False
    seed: int = 0
    sync_bn: bool = False                 # SyncBatchNorm across GPUs (BN statistics of the global batch)
    precise_bn: bool = False              # re-estimate BN running statistics before each checkpoint
    separate_bank: bool = False           # accepted for the original's --sperate_bank; no effect (see docs)

    def validate(self) -> None:
        constants.check_category(self.category)
        if self.mesh_d not in constants.MESH_DIMENSIONS:
            raise ValueError(f"mesh_d must be one of {constants.MESH_DIMENSIONS}, got {self.mesh_d!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.accumulation not in ("original", "aligned"):
            raise ValueError(f"accumulation must be 'original' or 'aligned', got {self.accumulation!r}")
        if self.bank_mean not in ("batch", "visible"):
            raise ValueError(f"bank_mean must be 'batch' or 'visible', got {self.bank_mean!r}")
        if self.batch_size < 1 or self.total_epochs < 1 or self.accumulate < 1:
            raise ValueError("batch_size, total_epochs and accumulate must be positive")


# Named presets: 'faithful' = the original's settings (real data, GPUs); 'demo' = the
# synthetic CPU demo (light backbone from random init, small batch, few epochs).
PRESETS: dict[str, dict[str, Any]] = {
    "faithful": {},
    "demo": dict(backbone="light", pretrained="random", batch_size=16, total_epochs=16, lr=1e-3,
                 lr_schedule="cosine", accumulate=1, accumulation="aligned", max_group=64,
                 checkpoint_every=0, save_final=True, resume_every=4, workers=0, cache_images=True,
                 precise_bn=True),
}

# Checkpoint fields that must match to resume (they define the network and the banks).
_RESUME_KEYS = ("backbone", "d_feature", "light_widths", "light_norm", "num_noise", "max_group", "mesh_d", "category",
                "azimuth_bins")


# ----------------------------------------------------------------------------- quirks


def original_lr(epoch: int, base_lr: float, every: int = 10, factor: float = 0.2) -> float:
    """Quirk of the original: at every epoch with ``(epoch - 1) % every == 0`` it sets
    ``lr = base_lr * factor`` (not cumulative), so the rate is ``base_lr`` during epoch 0 and
    ``base_lr * factor`` from epoch 1 on. Kept as the default schedule."""
    return base_lr if epoch < 1 else base_lr * factor


def learning_rate(epoch: int, config: TrainConfig) -> float:
    """The learning rate of ``epoch`` under ``config.lr_schedule``:
    original (:func:`original_lr`), step (``lr * update_lr ** (epoch // update_lr_epoch_n)``,
    the true step decay), cosine (to 0 over ``total_epochs``), constant."""
    if config.lr_schedule == "original":
        return original_lr(epoch, config.lr, config.update_lr_epoch_n, config.update_lr)
    if config.lr_schedule == "step":
        return config.lr * config.update_lr ** (epoch // config.update_lr_epoch_n)
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * epoch / config.total_epochs))
    return config.lr


def original_should_step(iteration: int, accumulate: int) -> bool:
    """Quirk of the original: backward at every iteration, optimiser step + zero_grad when
    the global iteration counter (before incrementing) ``% accumulate == 0``: the very first
    step follows one backward, later ones ``accumulate``. The counter runs across meshes and
    epochs, and gradients left at the end of an epoch carry over."""
    return iteration % accumulate == 0


def aligned_should_step(iteration: int, accumulate: int) -> bool:
    """Corrected accumulation: step after every ``accumulate`` backwards."""
    return (iteration + 1) % accumulate == 0


def effective_distance_thr(config: TrainConfig, image_scale: float) -> float:
    """``distance_thr`` in pixels of the prepared crops (scaled with the dataset's
    image_scale unless ``scale_distance_thr`` is off; scale 1 = faithful)."""
    return config.distance_thr * (image_scale if config.scale_distance_thr else 1.0)


# ----------------------------------------------------------------------------- keyed randomness


def derived_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys (stable across processes and platforms)."""
    lo, hi = (int(v) for v in np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32))
    return (lo | (hi << 32)) & ((1 << 63) - 1)


_TAG_SHUFFLE, _TAG_CLUTTER, _TAG_BANK = 1, 2, 3


class GlobalBatchSampler(Sampler[list[int]]):
    """Shuffled global batches of one mesh's dataset; each rank takes its contiguous chunk.

    Global batch k of epoch e is ``perm_e[k*B:(k+1)*B]`` with ``perm_e`` drawn from a seed of
    (seed, epoch, mesh); rank r gets chunk r of ``tensor_split(world)``, so concatenating
    the ranks' batches in rank order gives back the global batch (what the bank update sees).
    The last, smaller global batch is kept (as the original's drop_last=False) unless it has
    fewer images than ranks.
    """

    def __init__(self, size: int, batch_size: int, ctx: DistContext, seed: int, mesh_index: int,
                 shuffle: bool = True):
        if batch_size < ctx.world_size:
            raise ValueError(f"global batch {batch_size} is smaller than the {ctx.world_size} ranks")
        self.size, self.batch_size, self.ctx = size, batch_size, ctx
        self.seed, self.mesh_index, self.shuffle = seed, mesh_index, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[torch.Tensor]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(derived_seed(self.seed, _TAG_SHUFFLE, self.epoch, self.mesh_index))
            perm = torch.randperm(self.size, generator=gen)
        else:
            perm = torch.arange(self.size)
        batches = list(torch.split(perm, self.batch_size))
        return [b for b in batches if len(b) >= self.ctx.world_size]

    def __iter__(self):
        for batch in self.global_batches():
            yield batch.tensor_split(self.ctx.world_size)[self.ctx.rank].tolist()

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        return full + (1 if rest >= self.ctx.world_size else 0)


# ----------------------------------------------------------------------------- state


@dataclass
class MeshData:
    """One mesh of the category: its index (1-based), vertex count, dataset and loader."""

    index: int
    num_vertices: int
    dataset: TrainingDataset | None
    loader: DataLoader | None


@dataclass
class TrainState:
    """Counters that a checkpoint must restore: the next epoch and the global iteration."""

    epoch: int = 0
    iteration: int = 0
    history: list[dict] = field(default_factory=list)


def build_meshes(config: TrainConfig, ctx: DistContext) -> tuple[list[MeshData], float]:
    """Datasets and loaders of every mesh of the category; returns them and the image_scale."""
    mesh_paths = layout.cuboid_paths(config.dataroot, config.mesh_d, config.category)
    split = layout.split_layout(config.dataroot, "train", config.category)
    image_scale = layout.load_dataset_info(split.root).image_scale
    meshes = []
    for i, mesh_path in enumerate(mesh_paths, start=1):
        num_vertices = load_off(mesh_path)[0].shape[0]
        list_path = mesh_list_path(split, config.mesh_d, i, config.azimuth_bins)
        if not list_path.is_file() or not layout.read_list(list_path):
            # As the original: a mesh without training images keeps its (initial) bank.
            log.warning("%s mesh%02d: no training images (%s); its bank stays untrained", config.category, i, list_path)
            meshes.append(MeshData(i, num_vertices, None, None))
            continue
        dataset = TrainingDataset(config.dataroot, config.category, config.mesh_d, i,
                                  vertex_weights=config.vertex_weights, cache_images=config.cache_images,
                                  azimuth_bins=config.azimuth_bins)
        if dataset.num_vertices != num_vertices:
            raise ValueError(f"{list_path}: annotations have {dataset.num_vertices} vertices but {mesh_path} has "
                             f"{num_vertices}; re-run the preparation for this mesh")
        sampler = GlobalBatchSampler(len(dataset), config.batch_size, ctx, config.seed, i)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=config.workers,
                            pin_memory=ctx.device.type == "cuda")
        meshes.append(MeshData(i, num_vertices, dataset, loader))
    if all(m.dataset is None for m in meshes):
        raise FileNotFoundError(f"no training images for {config.category} in {split.lists3d(config.mesh_d)}; "
                                "run PrepareData.sh first")
    return meshes, image_scale


def build_banks(config: TrainConfig, meshes: list[MeshData], device: torch.device) -> list[FeatureBank]:
    return [FeatureBank(m.num_vertices, config.d_feature, config.num_noise, config.max_group, config.momentum,
                        mean_over_visible=config.bank_mean == "visible",
                        generator=torch.Generator().manual_seed(derived_seed(config.seed, _TAG_BANK, m.index)))
            .to(device) for m in meshes]


# ----------------------------------------------------------------------------- one step / epoch


def training_step(model: torch.nn.Module, bank: FeatureBank, batch: dict[str, Any], config: TrainConfig,
                  ctx: DistContext, epoch: int, mesh_index: int, distance_thr: float) -> tuple[torch.Tensor, dict]:
    """Forward, loss and bank update of one (local) batch; the caller back-propagates.

    Returns:
        (loss to back-propagate on this rank, stats with the GLOBAL batch's ``loss``,
        ``ce``, ``clutter`` (floats) and ``images``).
    """
    device = ctx.device
    images = batch["image"].to(device, non_blocking=True)
    pixels, weights = batch["vertex_pixels"], batch["weights"]                  # (b, nV, 2), (b, nV)
    height, width = images.shape[-2:]
    if height % STRIDE or width % STRIDE:
        raise ValueError(f"image size {height}x{width} is not a multiple of the stride {STRIDE}")
    vertex_index = vertex_cell_index(pixels, (height, width))                   # (b, nV)
    seeds = [derived_seed(config.seed, _TAG_CLUTTER, epoch, mesh_index, int(i)) for i in batch["index"]]
    clutter_index = sample_clutter_index(vertex_index, (height // STRIDE) * (width // STRIDE),
                                         config.num_noise, seeds=seeds)          # (b, n_noise)
    features = model(images, vertex_index.to(device), clutter_index.to(device))  # (b, nV + n_noise, d)
    pixels, weights = pixels.to(device), weights.to(device)

    # Global counts, so that the DDP average of the ranks' gradients is the global-batch one.
    local = torch.tensor([float((weights > 0).sum()), float(features.shape[0])], device=device)
    total_rows, total_images = distributed.all_reduce_sum(local, ctx).tolist()
    nv = bank.num_vertices
    noise_entries = total_images * config.num_noise * nv
    memory = bank.memory.clone()       # the loss uses the bank before this batch's update
    loss, stats = nemo_loss(features, memory, nv, pixels, weights, T=config.T, distance_thr=distance_thr,
                            weight_noise=config.weight_noise, noise_weight=config.noise_weight,
                            ce_count=total_rows / ctx.world_size, noise_count=noise_entries / ctx.world_size)
    bank.update(distributed.all_gather_cat(features.detach(), ctx), distributed.all_gather_cat(weights, ctx))

    sums = distributed.all_reduce_sum(torch.stack([stats["ce_sum"], stats["noise_sum"]]).double(), ctx)
    ce = float(sums[0]) / max(total_rows, 1.0) if total_rows else float("nan")
    clutter = float(sums[1]) / noise_entries if noise_entries else 0.0
    return loss, {"loss": ce + config.noise_weight * clutter, "ce": ce, "clutter": clutter,
                  "images": int(total_images)}


def train_one_epoch(model: torch.nn.Module, banks: list[FeatureBank], meshes: list[MeshData],
                    optimizer: torch.optim.Optimizer, ctx: DistContext, epoch: int, state: TrainState,
                    config: TrainConfig, distance_thr: float,
                    on_iteration: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """One pass over every mesh's training list. Returns the epoch's stats (global means)."""
    model.train()
    should_step = original_should_step if config.accumulation == "original" else aligned_should_step
    losses, ces, clutters, images = [], [], [], 0
    per_mesh = {}
    for mesh, bank in zip(meshes, banks):
        if mesh.loader is None:
            continue
        mesh.loader.batch_sampler.set_epoch(epoch)
        mesh_losses = []
        bar = tqdm(mesh.loader, desc=f"{config.category} epoch {epoch} mesh{mesh.index:02d}", leave=False,
                   disable=not ctx.is_main or len(mesh.loader) < 10, dynamic_ncols=True)
        for batch in bar:
            loss, stats = training_step(model, bank, batch, config, ctx, epoch, mesh.index, distance_thr)
            if not math.isfinite(stats["loss"]):
                raise FloatingPointError(
                    f"non-finite loss {stats['loss']} (ce {stats['ce']}, clutter {stats['clutter']}) for "
                    f"{config.category} mesh{mesh.index:02d}, epoch {epoch}, iteration {state.iteration}; "
                    "stopping. Lower the learning rate or check the data; the last checkpoint is intact.")
            loss.backward()
            if should_step(state.iteration, config.accumulate):
                optimizer.step()
                optimizer.zero_grad()
            state.iteration += 1
            losses.append(stats["loss"])
            ces.append(stats["ce"])
            clutters.append(stats["clutter"])
            mesh_losses.append(stats["loss"])
            images += stats["images"]
            bar.set_postfix(loss=f"{stats['loss']:.4f}")
            if on_iteration is not None:
                on_iteration(epoch, state.iteration)
        per_mesh[f"mesh{mesh.index:02d}"] = float(np.mean(mesh_losses)) if mesh_losses else None
    return {"loss": float(np.mean(losses)), "loss_ce": float(np.mean(ces)),
            "loss_clutter": float(np.mean(clutters)), "last_loss": losses[-1], "iterations": len(losses),
            "images": images, "mesh_loss": per_mesh}


# ----------------------------------------------------------------------------- checkpoints


def original_args(config: TrainConfig) -> argparse.Namespace:
    """The configuration under the original TrainNeMo.py's argument names (for old tools)."""
    return argparse.Namespace(
        local_size=[1, 1], d_feature=config.d_feature, batch_size=config.batch_size, workers=config.workers,
        total_epochs=config.total_epochs, distance_thr=config.distance_thr, T=config.T,
        weight_noise=config.weight_noise, update_lr_epoch_n=config.update_lr_epoch_n, update_lr_=config.update_lr,
        lr=config.lr, momentum=0.9, train_accumulate=config.accumulate, weight_decay=config.weight_decay,
        type_=config.category, num_noise=config.num_noise, max_group=config.max_group,
        adj_momentum=config.momentum, mesh_d=config.mesh_d, root_path=str(config.dataroot))


def checkpoint_payload(model: NeMoNet, banks: list[FeatureBank], optimizer: torch.optim.Optimizer,
                       state: TrainState, config: TrainConfig, epoch: int) -> dict[str, Any]:
    """Everything needed to use the model and to resume training exactly."""
    return {
        "format": checkpoint.FORMAT,
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "memory": [b.memory.detach().cpu().clone() for b in banks],
        "timestamp": int(time.time()),
        "args": original_args(config),
        "model": {"backbone": config.backbone, "d_feature": config.d_feature,
                  "light_widths": list(config.light_widths), "light_norm": config.light_norm},
        "banks": [{k: v.detach().cpu().clone() for k, v in b.state_dict().items()} for b in banks],
        "num_vertices": [b.num_vertices for b in banks],
        "category": config.category,
        "epoch": epoch,
        "iteration": state.iteration,
        "optimizer": optimizer.state_dict(),
        "pending_grad": [None if p.grad is None else p.grad.detach().cpu().clone() for p in model.parameters()],
        "rng": checkpoint.rng_state(),
        "config": _config_dict(config),
        "history": state.history,
    }


def _config_dict(config: TrainConfig) -> dict[str, Any]:
    out = asdict(config)
    out["light_widths"] = list(config.light_widths)
    return out


def restore(ckpt: dict[str, Any], model: NeMoNet, banks: list[FeatureBank], optimizer: torch.optim.Optimizer,
            config: TrainConfig, device: torch.device, path: Path) -> TrainState:
    """Load a checkpoint written by :func:`checkpoint_payload` into freshly built objects."""
    if ckpt.get("format") != checkpoint.FORMAT:
        raise ValueError(f"{path}: not a nemopose training checkpoint (an original checkpoint cannot be resumed; "
                         "use it for extraction)")
    saved = ckpt["config"]
    mismatched = [k for k in _RESUME_KEYS if k in saved and saved[k] != _config_dict(config)[k]]
    if mismatched:
        raise ValueError(f"{path}: cannot resume, settings differ: "
                         + ", ".join(f"{k} {saved[k]!r} -> {_config_dict(config)[k]!r}" for k in mismatched)
                         + " (use another --exproot or --no-resume)")
    for key in ("batch_size", "lr", "lr_schedule", "accumulate", "seed", "T", "weight_noise"):
        if saved.get(key) != _config_dict(config)[key]:
            log.warning("resuming with %s = %r (checkpoint: %r)", key, _config_dict(config)[key], saved.get(key))
    if len(ckpt["banks"]) != len(banks) or ckpt["num_vertices"] != [b.num_vertices for b in banks]:
        raise ValueError(f"{path}: banks for vertex counts {ckpt['num_vertices']}, meshes have "
                         f"{[b.num_vertices for b in banks]}")
    model.load_state_dict(ckpt["state"])
    for bank, bank_state in zip(banks, ckpt["banks"]):
        bank.load_state_dict(bank_state)
    optimizer.load_state_dict(ckpt["optimizer"])
    for p, g in zip(model.parameters(), ckpt["pending_grad"]):
        p.grad = None if g is None else g.to(device)
    checkpoint.set_rng_state(ckpt["rng"])
    return TrainState(epoch=ckpt["epoch"] + 1, iteration=ckpt["iteration"], history=list(ckpt.get("history", [])))


def _should_save(epoch: int, config: TrainConfig) -> bool:
    on_schedule = config.checkpoint_every > 0 and epoch % config.checkpoint_every == config.checkpoint_every - 1
    return on_schedule or (config.save_final and epoch == config.total_epochs - 1)


# ----------------------------------------------------------------------------- a whole category


def train(config: TrainConfig, ctx: DistContext | None = None, resume: bool = True,
          stop_after_epoch: int | None = None,
          on_iteration: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train one category (``config.category``), resuming from its latest checkpoint.

    Args:
        ctx: the process's place in the distributed run (default: one process on CPU).
        resume: continue from the latest ``saved_model``/``resume`` checkpoint if any.
        stop_after_epoch: return after this epoch (for tests and time-boxed runs).
        on_iteration: called with (epoch, global iteration) after every iteration.
    Returns:
        summary dict: ``epochs_run``, ``last_epoch``, ``history`` (the per-epoch records),
        ``checkpoint`` (the last path written or found), ``seconds``.
    """
    config.validate()
    ctx = ctx or DistContext()
    device = ctx.device
    exp_dir = checkpoint.experiment_dir(config.exproot, config.mesh_d, config.azimuth_bins)
    log_path = exp_dir / f"train_log_{config.category}.jsonl"
    if config.separate_bank:
        log.info("--separate-bank has no effect: every rank keeps its own identical copy of the banks")

    meshes, image_scale = build_meshes(config, ctx)
    distance_thr = effective_distance_thr(config, image_scale)
    seed_everything(config.seed)
    model = NeMoNet(config.backbone, config.d_feature, config.pretrained,
                    light_widths=tuple(config.light_widths), light_norm=config.light_norm).to(device)
    banks = build_banks(config, meshes, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state = TrainState()
    last_path = None

    found = checkpoint.list_checkpoints(exp_dir, config.category, include_resume=True) if resume else []
    if found:
        last_epoch, last_path = found[-1]
        state = restore(checkpoint.load_checkpoint(last_path, map_location="cpu"), model, banks, optimizer,
                        config, device, last_path)
        log.info("%s: resumed from %s (epoch %d done, iteration %d)", config.category, last_path.name,
                 last_epoch, state.iteration)
    if state.epoch >= config.total_epochs:
        log.info("%s: already trained (%d epochs); nothing to do", config.category, state.epoch)
        return {"epochs_run": 0, "last_epoch": state.epoch - 1, "history": state.history,
                "checkpoint": last_path, "seconds": 0.0}

    net: torch.nn.Module = model
    if ctx.distributed:
        if config.sync_bn and device.type == "cuda":
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    elif config.sync_bn:
        log.info("--sync-bn has no effect in a single process")

    n_images = sum(len(m.dataset) for m in meshes if m.dataset is not None)
    if ctx.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(exp_dir / f"config_{config.category}.json", _config_dict(config))
        log.info("%s: %d mesh(es) with %s vertices, %d training images of %s, backbone %s, global batch %d on "
                 "%d process(es) (%s), epochs %d..%d, distance_thr %.1f px", config.category, len(meshes),
                 [m.num_vertices for m in meshes], n_images,
                 "x".join(map(str, next(m.dataset for m in meshes if m.dataset).image_size)), config.backbone,
                 config.batch_size, ctx.world_size, device, state.epoch, config.total_epochs - 1, distance_thr)

    start_time, epochs_run = time.perf_counter(), 0
    end_epoch = config.total_epochs if stop_after_epoch is None else min(config.total_epochs, stop_after_epoch + 1)
    bar = tqdm(range(state.epoch, end_epoch), desc=f"train {config.category}", disable=not ctx.is_main,
               dynamic_ncols=True)
    for epoch in bar:
        lr = learning_rate(epoch, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        stats = train_one_epoch(net, banks, meshes, optimizer, ctx, epoch, state, config, distance_thr,
                                on_iteration)
        seconds = time.perf_counter() - t0
        record = {"category": config.category, "epoch": epoch, "lr": lr, **stats, "seconds": round(seconds, 3),
                  "images_per_s": round(stats["images"] / seconds, 3), "iteration": state.iteration}
        state.history.append(record)
        state.epoch = epoch + 1
        epochs_run += 1
        bar.set_postfix(loss=f"{stats['loss']:.4f}")
        save_now = _should_save(epoch, config)
        resume_now = not save_now and config.resume_every > 0 and (epoch + 1) % config.resume_every == 0
        if config.precise_bn and (save_now or resume_now):
            precise_batchnorm(model, meshes, config, ctx)
        if ctx.is_main:
            append_jsonl(log_path, record)
            log.debug("epoch %d: %s", epoch, record)
            if save_now:
                last_path = exp_dir / checkpoint.checkpoint_name(config.category, epoch)
                checkpoint.save(last_path, checkpoint_payload(model, banks, optimizer, state, config, epoch))
                _remove_resume_files(exp_dir, config.category, keep=None)
                log.info("%s: epoch %d loss %.4f (ce %.4f, clutter %.4f); saved %s", config.category, epoch,
                         stats["loss"], stats["loss_ce"], stats["loss_clutter"], last_path)
            elif resume_now:
                last_path = _save_resume(exp_dir, model, banks, optimizer, state, config, epoch)
        if ctx.distributed and (save_now or epoch == end_epoch - 1):
            check_banks_identical(banks, ctx)
        distributed.barrier(ctx)
    total = time.perf_counter() - start_time
    if ctx.is_main and state.history:
        last = state.history[-1]
        log.info("%s: %d epoch(s) in %.1f s; last epoch loss %.4f (ce %.4f, clutter %.4f), %.1f images/s",
                 config.category, epochs_run, total, last["loss"], last["loss_ce"], last["loss_clutter"],
                 last["images_per_s"])
    return {"epochs_run": epochs_run, "last_epoch": state.epoch - 1, "history": state.history,
            "checkpoint": last_path, "seconds": total}


def precise_batchnorm(model: NeMoNet, meshes: list[MeshData], config: TrainConfig, ctx: DistContext) -> None:
    """Re-estimate the BatchNorm running statistics over the training images (each rank its
    share, then averaged over ranks); see :func:`nemopose.model.recalibrate_batchnorm`."""
    local_batch = max(1, config.batch_size // ctx.world_size)

    def batches():
        for mesh in meshes:
            if mesh.dataset is None:
                continue
            indices = list(range(ctx.rank, len(mesh.dataset), ctx.world_size))
            for start in range(0, len(indices), local_batch):
                yield torch.stack([mesh.dataset[i]["image"] for i in indices[start:start + local_batch]])

    if recalibrate_batchnorm(model, batches(), ctx.device) and ctx.distributed:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                for buf in (module.running_mean, module.running_var):
                    torch.distributed.all_reduce(buf)
                    buf /= ctx.world_size


def check_banks_identical(banks: list[FeatureBank], ctx: DistContext, tol: float = 1e-6) -> None:
    """Every rank applies the same update to the same gathered batch, so the banks must agree;
    checked at checkpoints (a broadcast of rank 0's memory)."""
    for bank in banks:
        reference = bank.memory.clone()
        torch.distributed.broadcast(reference, src=0)
        diff = float((reference - bank.memory).abs().max())
        if diff > tol:
            raise RuntimeError(f"rank {ctx.rank}: bank differs from rank 0's by {diff:.3g}")


def _save_resume(exp_dir: Path, model, banks, optimizer, state, config, epoch) -> Path:
    """Write the rolling resume checkpoint and remove the older ones of this category."""
    path = exp_dir / checkpoint.resume_name(config.category, epoch)
    checkpoint.save(path, checkpoint_payload(model, banks, optimizer, state, config, epoch))
    _remove_resume_files(exp_dir, config.category, keep=path)
    return path


def _remove_resume_files(exp_dir: Path, category: str, keep: Path | None) -> None:
    """Delete the category's rolling resume checkpoints except ``keep`` (after a newer one
    was written, so there is always a complete checkpoint on disk)."""
    for _, old in checkpoint.list_checkpoints(exp_dir, category, include_resume=True):
        if old.name.startswith("resume_") and old != keep:
            old.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- CLI


def available_categories(dataroot: str | Path, mesh_d: str) -> list[str]:
    """Categories with a training list in the prepared train split."""
    out = []
    for cat in constants.CATEGORIES:
        lists = layout.split_layout(dataroot, "train", cat).lists3d(mesh_d)
        if any(lists.glob("mesh*.txt")):
            out.append(cat)
    return out


def build_parser() -> argparse.ArgumentParser:
    f = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m nemopose.train", description="Train NeMo (one network + banks per category).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    S = argparse.SUPPRESS  # unset options fall back to the preset, then to TrainConfig
    p.add_argument("--dataroot", default=f.dataroot, help="folder with PASCAL3D_train_NeMo")
    p.add_argument("--exproot", default=f.exproot, help="experiments folder; checkpoints go to <exproot>/NeMo_<mesh_d>/")
    p.add_argument("--categories", default="all",
                   help="'all' (every category with prepared training data), or names separated by ',' or ' '")
    p.add_argument("--mesh-d", dest="mesh_d", default=f.mesh_d, choices=constants.MESH_DIMENSIONS, help="cuboid meshes")
    p.add_argument("--azimuth-bins", dest="azimuth_bins", default=S,
                   help="unseen-pose setting: train on lists3D_<mesh_d>_azum_<MASK> (e.g. TFFTTFFT, from "
                        "PrepareData's --azimuth-bins); checkpoints go to NeMo_<mesh_d>_azum_<MASK>/ (default: off)")
    p.add_argument("--preset", default="faithful", choices=sorted(PRESETS),
                   help="faithful: the original's settings; demo: light backbone from random init for the "
                        f"synthetic CPU demo ({PRESETS['demo']})")
    g = p.add_argument_group("network (defaults: faithful preset)")
    g.add_argument("--backbone", default=S, choices=("resnetext", "light"), help=f"default {f.backbone}")
    g.add_argument("--pretrained", default=S, help=f"'imagenet', 'random' or a ResNet-50 .pth (default {f.pretrained})")
    g.add_argument("--d-feature", dest="d_feature", type=int, default=S, help=f"default {f.d_feature}")
    g.add_argument("--light-widths", dest="light_widths", type=lambda s: tuple(int(v) for v in s.split(",")),
                   default=S, help=f"stage widths of the light backbone (default {','.join(map(str, f.light_widths))})")
    g.add_argument("--light-norm", dest="light_norm", choices=("batch", "group"), default=S,
                   help=f"normalisation of the light backbone (default {f.light_norm})")
    o = p.add_argument_group("optimisation (defaults: faithful preset)")
    o.add_argument("--batch-size", dest="batch_size", type=int, default=S, help=f"GLOBAL batch (default {f.batch_size})")
    o.add_argument("--total-epochs", dest="total_epochs", type=int, default=S, help=f"default {f.total_epochs}")
    o.add_argument("--lr", type=float, default=S, help=f"default {f.lr}")
    o.add_argument("--weight-decay", dest="weight_decay", type=float, default=S, help=f"default {f.weight_decay}")
    o.add_argument("--lr-schedule", dest="lr_schedule", choices=LR_SCHEDULES, default=S,
                   help=f"original (quirk: lr*0.2 from epoch 1), step, cosine, constant (default {f.lr_schedule})")
    o.add_argument("--update-lr-epoch-n", dest="update_lr_epoch_n", type=int, default=S,
                   help=f"epochs per lr change (default {f.update_lr_epoch_n})")
    o.add_argument("--update-lr", dest="update_lr", type=float, default=S, help=f"lr factor (default {f.update_lr})")
    o.add_argument("--accumulate", type=int, default=S, help=f"iterations per optimiser step (default {f.accumulate})")
    o.add_argument("--accumulation", choices=("original", "aligned"), default=S,
                   help=f"original (quirk: first step after one backward) or aligned (default {f.accumulation})")
    b = p.add_argument_group("bank and loss (defaults: faithful preset)")
    b.add_argument("--T", dest="T", type=float, default=S, help=f"temperature (default {f.T})")
    b.add_argument("--distance-thr", dest="distance_thr", type=float, default=S,
                   help=f"near-vertex mask radius in scale-1 pixels (default {f.distance_thr})")
    b.add_argument("--scale-distance-thr", dest="scale_distance_thr", action=argparse.BooleanOptionalAction,
                   default=S, help="multiply distance_thr by the dataset's image_scale (default on)")
    b.add_argument("--weight-noise", dest="weight_noise", type=float, default=S, help=f"default {f.weight_noise}")
    b.add_argument("--noise-weight", dest="noise_weight", type=float, default=S,
                   help=f"weight of the clutter regulariser (default {f.noise_weight})")
    b.add_argument("--num-noise", dest="num_noise", type=int, default=S, help=f"clutter cells per image (default {f.num_noise})")
    b.add_argument("--max-group", dest="max_group", type=int, default=S, help=f"queue length / num_noise (default {f.max_group})")
    b.add_argument("--momentum", type=float, default=S, help=f"bank momentum (default {f.momentum})")
    b.add_argument("--bank-mean", dest="bank_mean", choices=("batch", "visible"), default=S,
                   help=f"batch (quirk: divide by B) or visible (default {f.bank_mean})")
    b.add_argument("--vertex-weights", dest="vertex_weights", choices=("original", "weighted"), default=S,
                   help=f"original (quirk: 0/1) or weighted (visible*kp_weights) (default {f.vertex_weights})")
    r = p.add_argument_group("checkpoints and runtime")
    r.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, default=S,
                   help=f"save saved_model_<cat>_<epoch> every N epochs, 0 = never (default {f.checkpoint_every})")
    r.add_argument("--save-final", dest="save_final", action=argparse.BooleanOptionalAction, default=S,
                   help="also save after the last epoch (default off; demo on)")
    r.add_argument("--resume-every", dest="resume_every", type=int, default=S,
                   help=f"rolling resume checkpoint every N epochs, 0 = off (default {f.resume_every})")
    r.add_argument("--no-resume", action="store_true", help="start from scratch even if checkpoints exist")
    r.add_argument("--workers", type=int, default=S, help=f"data loader workers (default {f.workers})")
    r.add_argument("--cache-images", dest="cache_images", action=argparse.BooleanOptionalAction, default=S,
                   help="keep decoded images in memory (default off; demo on)")
    r.add_argument("--seed", type=int, default=S, help=f"default {f.seed}")
    r.add_argument("--device", default="auto", help="auto, cpu or cuda (under torchrun: cuda:LOCAL_RANK)")
    r.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    r.add_argument("--sync-bn", dest="sync_bn", action="store_true", default=S,
                   help="SyncBatchNorm across GPUs (default off: per-GPU statistics, as the original's DataParallel)")
    r.add_argument("--precise-bn", dest="precise_bn", action=argparse.BooleanOptionalAction, default=S,
                   help="re-estimate BatchNorm running statistics over the training set before each "
                        "checkpoint (default off; demo on)")
    r.add_argument("--separate-bank", "--sperate_bank", dest="separate_bank", nargs="?", const="True", default=S,
                   help="the original's 'bank on a separate GPU'; accepted and ignored (banks live on every rank)")
    r.add_argument("--log-level", default="INFO", help="logging level")
    return p


def config_from_args(args: argparse.Namespace, category: str) -> TrainConfig:
    values = dict(PRESETS[args.preset])
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values.update({k: v for k, v in vars(args).items() if k in fields})
    if "separate_bank" in values:
        values["separate_bank"] = str(values["separate_bank"]).lower() not in ("false", "0", "no")
    values["category"] = category
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = distributed.init(args.device)
    try:
        if args.categories.strip() in ("", "all"):
            categories = available_categories(args.dataroot, args.mesh_d)
            if not categories:
                raise FileNotFoundError(f"no prepared training data in {args.dataroot} "
                                        f"(lists3D_{args.mesh_d}); run PrepareData.sh first")
            skipped = [c for c in constants.CATEGORIES if c not in categories]
            if skipped and ctx.is_main:
                log.info("categories without training data, skipped: %s", ", ".join(skipped))
        else:
            categories = constants.parse_categories(args.categories)
        for category in categories:
            train(config_from_args(args, category), ctx, resume=not args.no_resume)
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
