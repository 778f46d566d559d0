"""Train NeMo's feature extractor and neural-mesh banks, one model per category (METHOD.md §9, §15).

Per category: one network; per mesh (``single``: one cuboid, ``multi``: one per CAD model) a
training list ``lists3D_<mesh_d>/<cat>/meshNN.txt`` and a :class:`~nemopose.train.bank.FeatureBank`.
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

Randomness is keyed, not streamed (:mod:`nemopose.train.loader`): a run is reproducible,
independent of the number of ranks and resumable exactly. One data loader per category
(:func:`~nemopose.train.loader.build_loader`), built once, with workers that persist across
epochs and do the per-sample work while the network trains.

Precision (:mod:`nemopose.train.precision`): ``fp32`` (default) or ``bf16`` autocast around the
network's forward; the head, the normalisation, the loss, the bank and the weights stay fp32.

CLI: ``python -m nemopose.train --dataroot data --categories car --preset faithful``
(see ``--help``; TrainNeMo.sh drives it).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from . import checkpoint
from .. import constants, distributed
from ..cli import next_steps
from .bank import FeatureBank, nemo_loss
from ..cli import add_categories_argument
from ..data import layout
from ..data.datasets import normalize_image
from ..distributed import DistContext
from ..errors import DataNotFound
from ..experiment import Experiment
from ..cli.progress import progress_bar
from ..fetch.weights import fetch_imagenet_weights
from .model import NeMoNet, recalibrate_batchnorm
from .precision import PRECISIONS, check_precision, memory_format, network_autocast
from .config import (LR_SCHEDULES, PRESETS, TrainConfig, TrainState, aligned_should_step, config_dict,
    effective_distance_thr, learning_rate, original_should_step)
from .loader import TAG_BANK, MeshData, build_loader, build_meshes, derived_seed
from ..utils import append_jsonl, atomic_write_json, seed_everything, setup_logging

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- network and banks


def build_model(config: TrainConfig, device: torch.device) -> NeMoNet:
    """The network of ``config`` on ``device``; float32 weights whatever the precision, in
    channels_last for bf16 on CUDA (:func:`nemopose.train.precision.memory_format`)."""
    if device.type == "cuda":
        # Training crops have one size per category: cuDNN benchmarks the convolution
        # algorithms once and keeps the fastest (a process-wide setting).
        torch.backends.cudnn.benchmark = True
    model = NeMoNet(config.backbone, config.d_feature, config.pretrained,
                    light_widths=tuple(config.light_widths), light_norm=config.light_norm)
    return model.to(device, memory_format=memory_format(config.precision, device))


def build_banks(config: TrainConfig, meshes: list[MeshData], device: torch.device) -> list[FeatureBank]:
    return [FeatureBank(m.num_vertices, config.d_feature, config.num_noise, config.max_group, config.momentum,
                        mean_over_visible=config.bank_mean == "visible",
                        generator=torch.Generator().manual_seed(derived_seed(config.seed, TAG_BANK, m.index)))
            .to(device) for m in meshes]


# ----------------------------------------------------------------------------- one step / epoch


def training_step(model: torch.nn.Module, bank: FeatureBank, batch: dict[str, Any], config: TrainConfig,
                  ctx: DistContext, distance_thr: float) -> tuple[torch.Tensor, dict]:
    """Forward, loss and bank update of one (local) batch; the caller back-propagates.

    Args:
        batch: collated :class:`~nemopose.train.loader.TrainingSamples` items of one mesh:
            ``image`` uint8 ``(b, 3, H, W)``, ``vertex_pixels`` ``(b, nV, 2)``, ``weights``
            ``(b, nV)``, ``vertex_index`` ``(b, nV)``, ``clutter_index`` ``(b, n_noise)``.
    Returns:
        (loss to back-propagate on this rank, stats with the GLOBAL batch's ``loss``,
        ``ce``, ``clutter`` (floats) and ``images``).
    """
    device = ctx.device
    images = normalize_image(batch["image"].to(device, non_blocking=True))     # (b, 3, H, W) float32
    images = images.contiguous(memory_format=memory_format(config.precision, device))
    vertex_index = batch["vertex_index"].to(device, non_blocking=True)         # (b, nV)
    clutter_index = batch["clutter_index"].to(device, non_blocking=True)       # (b, n_noise)
    with network_autocast(config.precision, device):
        features = model(images, vertex_index, clutter_index)                   # (b, nV + n_noise, d) fp32
    pixels = batch["vertex_pixels"].to(device, non_blocking=True)               # (b, nV, 2)
    weights = batch["weights"].to(device, non_blocking=True)                    # (b, nV)

    # Global counts, so that the DDP average of the ranks' gradients is the global-batch one
    # (counted on the CPU copy; one process needs no device round trip, which would be a sync).
    local = [float((batch["weights"] > 0).sum()), float(features.shape[0])]
    if ctx.distributed:
        local = distributed.all_reduce_sum(torch.tensor(local, device=device), ctx).tolist()
    total_rows, total_images = local
    nv = bank.num_vertices
    noise_entries = total_images * config.num_noise * nv
    memory = bank.memory.clone()       # the loss uses the bank before this batch's update
    loss, stats = nemo_loss(features, memory, nv, pixels, weights, temperature=config.temperature, distance_thr=distance_thr,
                            clutter_prior=config.clutter_prior, clutter_loss_weight=config.clutter_loss_weight,
                            ce_count=total_rows / ctx.world_size, noise_count=noise_entries / ctx.world_size)
    bank.update(distributed.all_gather_cat(features.detach(), ctx), distributed.all_gather_cat(weights, ctx))

    sums = distributed.all_reduce_sum(torch.stack([stats["ce_sum"], stats["noise_sum"]]).double(), ctx)
    ce = float(sums[0]) / max(total_rows, 1.0) if total_rows else float("nan")
    clutter = float(sums[1]) / noise_entries if noise_entries else 0.0
    return loss, {"loss": ce + config.clutter_loss_weight * clutter, "ce": ce, "clutter": clutter,
                  "images": int(total_images)}


@dataclass
class TrainingRun:
    """Everything the training of one category holds, built once by :func:`prepare_run`
    (and restored from the latest checkpoint when resuming).

    Attributes:
        config, ctx, exp: the settings, the process's place in the run, the experiment folder.
        meshes, data_info: the meshes with their training lists; the dataset's description.
        distance_thr: the near-vertex radius in pixels of the prepared crops.
        model: the bare network (checkpoints, BatchNorm); net: what the step runs (``model``,
            or its DDP wrapper).
        banks: one feature bank per mesh; optimizer: Adam over the network's weights.
        state: epoch and iteration counters and the per-epoch history.
        loader: the one data loader of the run (:func:`~nemopose.train.loader.build_loader`).
        last_path: the newest checkpoint written or resumed from.
    """

    config: TrainConfig
    ctx: DistContext
    exp: Experiment
    meshes: list[MeshData]
    data_info: layout.DatasetInfo
    distance_thr: float
    model: NeMoNet
    net: torch.nn.Module
    banks: list[FeatureBank]
    optimizer: torch.optim.Optimizer
    state: TrainState
    loader: DataLoader | None = None
    last_path: Path | None = None


def train_one_epoch(run: TrainingRun, epoch: int,
                    on_iteration: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """One pass over every mesh's training list (``run.loader``, mesh after mesh). Returns the
    epoch's stats (global means)."""
    config, ctx, state = run.config, run.ctx, run.state
    run.net.train()
    should_step = original_should_step if config.accumulation == "original" else aligned_should_step
    bank_of = {m.index: bank for m, bank in zip(run.meshes, run.banks)}
    losses, ces, clutters, images = [], [], [], 0
    mesh_losses: dict[int, list[float]] = {m.index: [] for m in run.meshes if m.dataset is not None}
    run.loader.batch_sampler.set_epoch(epoch)
    bar = progress_bar(run.loader, desc=f"{config.category} epoch {epoch}", leave=False,
                       disable=not ctx.is_main or len(run.loader) < 10, dynamic_ncols=True)
    for batch in bar:
        mesh_index = int(batch["mesh"][0])                    # a batch holds one mesh's samples
        loss, stats = training_step(run.net, bank_of[mesh_index], batch, config, ctx, run.distance_thr)
        if not math.isfinite(stats["loss"]):
            raise FloatingPointError(
                f"non-finite loss {stats['loss']} (ce {stats['ce']}, clutter {stats['clutter']}) for "
                f"{config.category} mesh{mesh_index:02d}, epoch {epoch}, iteration {state.iteration}; "
                "stopping. Lower the learning rate or check the data; the last checkpoint is intact.")
        loss.backward()
        if should_step(state.iteration, config.accumulate):
            run.optimizer.step()
            run.optimizer.zero_grad()
        state.iteration += 1
        losses.append(stats["loss"])
        ces.append(stats["ce"])
        clutters.append(stats["clutter"])
        mesh_losses[mesh_index].append(stats["loss"])
        images += stats["images"]
        bar.set_postfix(mesh=f"{mesh_index:02d}", loss=f"{stats['loss']:.4f}")
        if on_iteration is not None:
            on_iteration(epoch, state.iteration)
    per_mesh = {f"mesh{i:02d}": float(np.mean(v)) if v else None for i, v in mesh_losses.items()}
    return {"loss": float(np.mean(losses)), "loss_ce": float(np.mean(ces)),
            "loss_clutter": float(np.mean(clutters)), "last_loss": losses[-1], "iterations": len(losses),
            "images": images, "mesh_loss": per_mesh}


def _should_save(epoch: int, config: TrainConfig) -> bool:
    on_schedule = config.checkpoint_every > 0 and epoch % config.checkpoint_every == config.checkpoint_every - 1
    return on_schedule or (config.save_final and epoch == config.total_epochs - 1)


# ----------------------------------------------------------------------------- a whole category


def prepare_run(config: TrainConfig, ctx: DistContext, resume: bool = True) -> TrainingRun:
    """Build the network, banks and optimiser of ``config.category`` (ImageNet weights fetched
    by rank 0 when needed) and restore the latest checkpoint (``resume``)."""
    device = ctx.device
    check_precision(config.precision, device)
    if config.separate_bank:
        log.info("--separate-bank has no effect: every rank keeps its own identical copy of the banks")
    meshes, data_info = build_meshes(config)
    if config.backbone == "resnetext" and config.pretrained == "imagenet":   # rank 0 fills the torch cache
        if ctx.is_main:
            fetch_imagenet_weights(config.download, config.download_mirror or None)
        distributed.barrier(ctx)
    seed_everything(config.seed)
    model = build_model(config, device)
    banks = build_banks(config, meshes, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    run = TrainingRun(config, ctx, Experiment(config.exproot, config.mesh_d, config.azimuth_bins), meshes, data_info,
                      effective_distance_thr(config, data_info.image_scale), model, model, banks, optimizer,
                      TrainState())
    found = run.exp.list_checkpoints(config.category, include_resume=True) if resume else []
    if found:
        last_epoch, run.last_path = found[-1]
        run.state = checkpoint.restore_training(checkpoint.load_checkpoint(run.last_path, map_location="cpu"), model,
                                                banks, optimizer, config, device, run.last_path)
        log.info("%s: resumed from %s (epoch %d done, iteration %d)", config.category, run.last_path.name,
                 last_epoch, run.state.iteration)
    if ctx.distributed:
        if config.sync_bn and device.type == "cuda":
            run.net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        run.net = DistributedDataParallel(run.net, device_ids=[device.index] if device.type == "cuda" else None)
    elif config.sync_bn:
        log.info("--sync-bn has no effect in a single process")
    return run


def _log_start(run: TrainingRun) -> None:
    config, meshes = run.config, run.meshes
    n_images = sum(len(m.dataset) for m in meshes if m.dataset is not None)
    log.info("%s: %d mesh(es) with %s vertices, %d training images of %s, backbone %s, precision %s, global "
             "batch %d on %d process(es) (%s), %d loader worker(s) per process, epochs %d..%d, "
             "distance_thr %.1f px", config.category, len(meshes), [m.num_vertices for m in meshes], n_images,
             "x".join(map(str, next(m.dataset for m in meshes if m.dataset).image_size)), config.backbone,
             config.precision, config.batch_size, run.ctx.world_size, run.ctx.device, config.workers, run.state.epoch,
             config.total_epochs - 1, run.distance_thr)


def _end_epoch(run: TrainingRun, epoch: int, stats: dict[str, Any], seconds: float, last: bool) -> dict[str, Any]:
    """Record the epoch (history, train log) and write the checkpoints it is due."""
    config, ctx = run.config, run.ctx
    record = {"category": config.category, "epoch": epoch, "lr": run.optimizer.param_groups[0]["lr"], **stats,
              "seconds": round(seconds, 3), "images_per_s": round(stats["images"] / seconds, 3),
              "iteration": run.state.iteration}
    run.state.history.append(record)
    run.state.epoch = epoch + 1
    save_now = _should_save(epoch, config)
    resume_now = not save_now and config.resume_every > 0 and (epoch + 1) % config.resume_every == 0
    if config.precise_bn and (save_now or resume_now):
        precise_batchnorm(run.model, run.meshes, config, ctx)
    if ctx.is_main:
        append_jsonl(run.exp.train_log_path(config.category), record)
        log.debug("epoch %d: %s", epoch, record)
        if save_now or resume_now:
            run.last_path = _save(run, epoch, resume_only=not save_now)
        if save_now:
            log.info("%s: epoch %d loss %.4f (ce %.4f, clutter %.4f); saved %s", config.category, epoch,
                     stats["loss"], stats["loss_ce"], stats["loss_clutter"], run.last_path)
    if ctx.distributed and (save_now or last):
        check_banks_identical(run.banks, ctx)
    distributed.barrier(ctx)
    return record


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
    run = prepare_run(config, ctx, resume)
    if run.state.epoch >= config.total_epochs:
        log.info("%s: already trained (%d epochs); nothing to do", config.category, run.state.epoch)
        return {"epochs_run": 0, "last_epoch": run.state.epoch - 1, "history": run.state.history,
                "checkpoint": run.last_path, "seconds": 0.0}
    run.loader = build_loader(run.meshes, config, ctx)
    if ctx.is_main:
        atomic_write_json(run.exp.train_config_path(config.category), config_dict(config))
        _log_start(run)

    start_time, epochs_run = time.perf_counter(), 0
    end_epoch = config.total_epochs if stop_after_epoch is None else min(config.total_epochs, stop_after_epoch + 1)
    bar = progress_bar(range(run.state.epoch, end_epoch), desc=f"train {config.category}", disable=not ctx.is_main,
                       dynamic_ncols=True)
    for epoch in bar:
        for group in run.optimizer.param_groups:
            group["lr"] = learning_rate(epoch, config)
        t0 = time.perf_counter()
        stats = train_one_epoch(run, epoch, on_iteration)
        _end_epoch(run, epoch, stats, time.perf_counter() - t0, last=epoch == end_epoch - 1)
        epochs_run += 1
        bar.set_postfix(loss=f"{stats['loss']:.4f}")
    total = time.perf_counter() - start_time
    if ctx.is_main and run.state.history:
        last = run.state.history[-1]
        log.info("%s: %d epoch(s) in %.1f s; last epoch loss %.4f (ce %.4f, clutter %.4f), %.1f images/s",
                 config.category, epochs_run, total, last["loss"], last["loss_ce"], last["loss_clutter"],
                 last["images_per_s"])
    return {"epochs_run": epochs_run, "last_epoch": run.state.epoch - 1, "history": run.state.history,
            "checkpoint": run.last_path, "seconds": total}


def precise_batchnorm(model: NeMoNet, meshes: list[MeshData], config: TrainConfig, ctx: DistContext) -> None:
    """Re-estimate the BatchNorm running statistics over the training images (each rank its
    share, then averaged over ranks); see :func:`nemopose.train.model.recalibrate_batchnorm`.
    Always in fp32, whatever the training precision: the statistics serve the fp32 inference."""
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


def _save(run: TrainingRun, epoch: int, resume_only: bool) -> Path:
    """Write ``saved_model_<cat>_<epoch>`` (or, with ``resume_only``, the rolling
    ``resume_<cat>_<epoch>``), then delete the category's older resume checkpoints: there is
    always a complete checkpoint on disk."""
    config, exp = run.config, run.exp
    path = (exp.resume_path if resume_only else exp.checkpoint_path)(config.category, epoch)
    data = {"image_scale": run.data_info.image_scale, "synthetic": run.data_info.synthetic}
    checkpoint.save(path, checkpoint.training_payload(run.model, run.banks, run.optimizer, run.state, config, epoch,
                                                      data))
    for _, old in exp.list_checkpoints(config.category, include_resume=True):
        if old.name.startswith("resume_") and old != path:
            old.unlink(missing_ok=True)
    return path


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    f = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m nemopose.train", description="Train NeMo (one network + banks per category).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    S = argparse.SUPPRESS  # unset options fall back to the preset, then to TrainConfig
    p.add_argument("--dataroot", default=f.dataroot, help="folder with PASCAL3D_train_NeMo")
    p.add_argument("--exproot", default=f.exproot, help="experiments folder; checkpoints go to <exproot>/NeMo_<mesh_d>/")
    add_categories_argument(p, "every category with prepared training data")
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
    o.add_argument("--lr-decay-every", "--update-lr-epoch-n", dest="lr_decay_every", type=int, default=S,
                   help=f"epochs per learning-rate change (default {f.lr_decay_every})")
    o.add_argument("--lr-decay", "--update-lr", dest="lr_decay", type=float, default=S,
                   help=f"factor applied to the learning rate at a change (default {f.lr_decay})")
    o.add_argument("--accumulate", type=int, default=S, help=f"iterations per optimiser step (default {f.accumulate})")
    o.add_argument("--accumulation", choices=("original", "aligned"), default=S,
                   help=f"original (quirk: first step after one backward) or aligned (default {f.accumulation})")
    b = p.add_argument_group("bank and loss (defaults: faithful preset)")
    b.add_argument("--temperature", "--T", dest="temperature", type=float, default=S,
                   help=f"softmax temperature of the contrastive loss (default {f.temperature})")
    b.add_argument("--distance-thr", dest="distance_thr", type=float, default=S,
                   help=f"near-vertex mask radius in scale-1 pixels (default {f.distance_thr})")
    b.add_argument("--scale-distance-thr", dest="scale_distance_thr", action=argparse.BooleanOptionalAction,
                   default=S, help="multiply distance_thr by the dataset's image_scale (default on)")
    b.add_argument("--clutter-prior", "--weight-noise", dest="clutter_prior", type=float, default=S,
                   help=f"prior weight of each clutter column in the softmax: its logit gets + log(prior) "
                        f"(default {f.clutter_prior})")
    b.add_argument("--clutter-loss-weight", "--noise-weight", dest="clutter_loss_weight", type=float, default=S,
                   help=f"weight of the clutter regulariser in the loss (default {f.clutter_loss_weight})")
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
    r.add_argument("--workers", type=int, default=S,
                   help=f"data loader worker processes per rank, kept across epochs (default {f.workers}; demo 0)")
    r.add_argument("--prefetch-factor", dest="prefetch_factor", type=int, default=S,
                   help=f"batches each loader worker keeps ready (default {f.prefetch_factor})")
    r.add_argument("--precision", choices=PRECISIONS, default=S,
                   help="fp32, or bf16: bfloat16 autocast around the network's forward (head, normalisation, "
                        "loss, bank and weights stay fp32; channels_last on CUDA); recorded in the checkpoint "
                        f"(default {f.precision})")
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
    r.add_argument("--download", choices=("auto", "no"), default=S,
                   help="--pretrained imagenet with no weights in the torch cache: download them (auto, default) or "
                        "fail (no)")
    r.add_argument("--download-mirror", dest="download_mirror", default=S,
                   help="base URL or folder holding resnet50-0676ba61.pth (default: torchvision's address)")
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
        prepared = layout.prepared_categories(args.dataroot, args.mesh_d)
        where = dict(dataroot=args.dataroot, exproot=args.exproot, mesh_d=args.mesh_d)
        if constants.wants_all(args.categories):
            categories = prepared
            if not categories:
                raise DataNotFound(f"no prepared training data in {args.dataroot} (lists3D_{args.mesh_d}); "
                                   + next_steps.chain(["prepare", "train", "infer"], **where))
            skipped = [c for c in constants.CATEGORIES if c not in categories]
            if skipped and ctx.is_main:
                log.info("categories without training data, skipped: %s", ", ".join(skipped))
        else:
            categories = constants.parse_categories(args.categories)
            missing = [c for c in categories if c not in prepared]
            if missing and not getattr(args, "azimuth_bins", ""):
                raise DataNotFound(f"{', '.join(missing)}: no prepared training data in {args.dataroot} "
                                   f"(lists3D_{args.mesh_d}); {next_steps.prepared_note(args.dataroot, args.mesh_d)}; "
                                   + next_steps.chain(["prepare", "train", "infer"], categories=missing, **where))
        train_root = layout.split_root(args.dataroot, "train")
        if ctx.is_main and layout.load_dataset_info(train_root).synthetic:     # once per run
            log.warning("the data in %s is SYNTHETIC (generated), not PASCAL3D+", train_root)
        for category in categories:
            train(config_from_args(args, category), ctx, resume=not args.no_resume)
    finally:
        distributed.shutdown()
    return 0

