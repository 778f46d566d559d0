"""Training settings, presets and the original's training quirks (METHOD.md §9).

:class:`TrainConfig` holds every setting with the original TrainNeMo.py/.sh value as its
default; :data:`PRESETS` names the other useful sets (the synthetic CPU demo). The quirks of
the original's training loop are small named helpers, each beside its corrected variant:
:func:`original_lr` (the learning rate "decay" that is a reset) and
:func:`original_should_step` (the first optimiser step after a single backward).
:class:`TrainState` is what a checkpoint must restore besides weights and banks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import constants
from .precision import PRECISIONS

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
    lr_decay_every: int = 10              # epochs per learning-rate change (the original's update_lr_epoch_n)
    lr_decay: float = 0.2                 # factor at a change (the original's update_lr)
    accumulate: int = 10                  # optimiser step every 10 iterations (quirk: see original_should_step)
    accumulation: str = "original"        # 'original' | 'aligned' (step after every `accumulate` backwards)
    # bank and loss
    temperature: float = 0.07             # softmax temperature (the original's T)
    distance_thr: float = 48.0            # pixels of the faithful (scale 1) crops
    scale_distance_thr: bool = True       # times the dataset's image_scale (1 for real data)
    clutter_prior: float = 5e-3           # each clutter logit + log(prior) (the original's weight_noise)
    clutter_loss_weight: float = 0.1      # weight of the clutter regulariser (the original's noise_weight)
    num_noise: int = 5
    max_group: int = 512
    momentum: float = 0.9                 # bank momentum (the original's adj_momentum)
    bank_mean: str = "batch"              # quirk: divide by the batch size; 'visible' = corrected
    vertex_weights: str = "original"      # quirk: 0/1 weights; 'weighted' keeps kp_weights
    # checkpoints and runtime
    checkpoint_every: int = 200           # saved_model_<cat>_<epoch> at epochs 199, 399, ...
    save_final: bool = False              # also save after the last epoch
    resume_every: int = 10                # rolling resume_<cat>_<epoch>.pth every N epochs (0: off)
    workers: int = 8                      # data-loader processes per rank, kept across epochs
    prefetch_factor: int = 2              # batches each worker keeps ready (torch's default)
    cache_images: bool = False
    precision: str = "fp32"               # 'bf16': bfloat16 autocast around the network (nemopose.train.precision)
    seed: int = 0
    sync_bn: bool = False                 # SyncBatchNorm across GPUs (BN statistics of the global batch)
    precise_bn: bool = False              # re-estimate BN running statistics before each checkpoint
    download: str = "auto"                # ImageNet weights missing from the torch cache: 'auto' fetches, 'no' fails
    download_mirror: str = ""             # base URL or folder holding resnet50-0676ba61.pth (default: torchvision's)
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
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.workers < 0 or self.prefetch_factor < 1:
            raise ValueError(f"workers must be >= 0 and prefetch_factor >= 1, got {self.workers}, "
                             f"{self.prefetch_factor}")


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
RESUME_KEYS = ("backbone", "d_feature", "light_widths", "light_norm", "num_noise", "max_group", "mesh_d", "category",
                "azimuth_bins")


# ----------------------------------------------------------------------------- quirks


def original_lr(epoch: int, base_lr: float, factor: float = 0.2) -> float:
    """Quirk of the original: at every epoch with ``(epoch - 1) % lr_decay_every == 0``
    it sets ``lr = base_lr * factor`` (not cumulative), so the rate is ``base_lr`` during
    epoch 0 and ``base_lr * factor`` from epoch 1 on, whatever the period. Kept as the
    default schedule."""
    return base_lr if epoch < 1 else base_lr * factor


def learning_rate(epoch: int, config: TrainConfig) -> float:
    """The learning rate of ``epoch`` under ``config.lr_schedule``:
    original (:func:`original_lr`), step (``lr * lr_decay ** (epoch // lr_decay_every)``,
    the true step decay), cosine (to 0 over ``total_epochs``), constant."""
    if config.lr_schedule == "original":
        return original_lr(epoch, config.lr, config.lr_decay)
    if config.lr_schedule == "step":
        return config.lr * config.lr_decay ** (epoch // config.lr_decay_every)
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


# Fields renamed since the first checkpoints: old name -> new name.
RENAMED_KEYS = {"T": "temperature", "weight_noise": "clutter_prior", "noise_weight": "clutter_loss_weight",
                "update_lr": "lr_decay", "update_lr_epoch_n": "lr_decay_every"}


def upgrade_config_keys(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved configuration under today's field names (checkpoints written before a rename)."""
    return {RENAMED_KEYS.get(k, k): v for k, v in saved.items()}


def config_dict(config: TrainConfig) -> dict[str, Any]:
    """The configuration as JSON-friendly values (saved in checkpoints and config_<cat>.json)."""
    out = asdict(config)
    out["light_widths"] = list(config.light_widths)
    return out


@dataclass
class TrainState:
    """Counters that a checkpoint must restore: the next epoch and the global iteration."""

    epoch: int = 0
    iteration: int = 0
    history: list[dict] = field(default_factory=list)


