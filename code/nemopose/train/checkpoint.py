"""Training checkpoints: names, saving, loading, and the authors' original format (METHOD.md §9, §13).

A checkpoint ``saved_model_<cat>_<epoch %02d>.pth`` is a dict. It keeps the original's keys
so that tools written for NeMo find what they expect:

- ``state``: the network's state dict (ours: our module names; original: DataParallel names
  ``module.net.extractor.*`` ..., see :mod:`nemopose.train.model`);
- ``memory``: list of bank tensors, one per mesh (vertex rows then clutter rows);
- ``timestamp``; ``args``: an ``argparse.Namespace`` with the original's flag names;

and adds what exact resumption needs: ``format``, ``model`` (how to rebuild the network),
``banks`` (bank state dicts, with the queue pointer), ``num_vertices``, ``epoch`` (the last
completed), ``iteration`` (the global iteration counter), ``optimizer``, ``pending_grad``
(gradients accumulated since the last optimiser step), ``rng`` and ``config``.

Rolling resume checkpoints ``resume_<cat>_<epoch>.pth`` have the same content. File names
and folders are :mod:`nemopose.experiment`'s.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bank import FeatureBank
from ..errors import NemoPoseError
from ..experiment import CheckpointNotFound
from .model import NeMoNet, from_original_state_dict, is_original_state_dict
from .config import RESUME_KEYS, TrainConfig, TrainState, config_dict, upgrade_config_keys
from ..utils import atomic_torch_save

log = logging.getLogger(__name__)

FORMAT = "nemopose-train-1"


class CheckpointError(NemoPoseError, ValueError):
    """A checkpoint file that is missing, unreadable or does not fit (the message says which)."""


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (ours or the original's) without unpickling arbitrary objects
    (``weights_only``; the original's ``argparse.Namespace`` is allowed)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFound(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report the file, whatever torch raised
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or "state" not in ckpt or "memory" not in ckpt:
        raise CheckpointError(f"{path}: not a NeMo checkpoint (needs 'state' and 'memory')")
    return ckpt


def is_original(ckpt: dict[str, Any]) -> bool:
    return ckpt.get("format") != FORMAT and is_original_state_dict(ckpt["state"])


def load_network(ckpt: dict[str, Any] | str | os.PathLike, device: torch.device | str = "cpu",
                 test_head_bias: bool = False) -> tuple[NeMoNet, list[torch.Tensor], dict[str, Any]]:
    """Rebuild the network of a checkpoint (ours or the original's) for feature extraction.

    Returns:
        (model in eval mode on ``device``, bank memories ``[(nV + Q, d)]`` per mesh,
        info dict with ``backbone``, ``d_feature``, ``epoch``, ``original``, ``category``,
        ``image_scale`` and ``synthetic`` of the training data (None when not recorded), and
        the training ``precision`` (the weights are float32 whatever it was)).
    """
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    if is_original(ckpt):
        state = from_original_state_dict(ckpt["state"])
        d_feature = state["head.weight"].shape[0]
        model = NeMoNet("resnetext", d_feature=d_feature, pretrained="random", test_head_bias=test_head_bias)
        info = {"backbone": "resnetext", "d_feature": d_feature, "original": True,
                "epoch": None, "category": getattr(ckpt.get("args"), "type_", None), "image_scale": 1.0,
                "synthetic": False, "precision": "fp32"}
    else:
        spec = ckpt["model"]
        model = NeMoNet(spec["backbone"], d_feature=spec["d_feature"], pretrained="random",
                        test_head_bias=test_head_bias,
                        light_widths=tuple(spec.get("light_widths", (16, 32, 64, 128, 256))),
                        light_norm=spec.get("light_norm", "batch"))
        state = ckpt["state"]
        info = {"backbone": spec["backbone"], "d_feature": spec["d_feature"], "original": False,
                "epoch": ckpt.get("epoch"), "category": ckpt.get("category"),
                "image_scale": ckpt.get("data", {}).get("image_scale"), "synthetic": ckpt.get("data", {}).get("synthetic"),
                "precision": ckpt.get("config", {}).get("precision", "fp32")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit a {info['backbone']} network: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}")
    memories = [m.detach().to("cpu", torch.float32) for m in ckpt["memory"]]
    return model.to(device).eval(), memories, info


# ----------------------------------------------------------------------------- RNG states


def rng_state() -> dict[str, Any]:
    """Python, NumPy (legacy global), torch CPU and CUDA generator states (loadable with
    ``weights_only``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuplify(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def save(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Atomic ``torch.save`` (an interrupted write never leaves a truncated checkpoint)."""
    payload = dict(payload)
    payload.setdefault("format", FORMAT)
    atomic_torch_save(payload, path)


# ----------------------------------------------------------------------------- training state


def original_args(config: TrainConfig) -> argparse.Namespace:
    """The configuration under the original TrainNeMo.py's argument names (for old tools)."""
    return argparse.Namespace(
        local_size=[1, 1], d_feature=config.d_feature, batch_size=config.batch_size, workers=config.workers,
        total_epochs=config.total_epochs, distance_thr=config.distance_thr, T=config.temperature,
        weight_noise=config.clutter_prior, update_lr_epoch_n=config.lr_decay_every, update_lr_=config.lr_decay,
        lr=config.lr, momentum=0.9, train_accumulate=config.accumulate, weight_decay=config.weight_decay,
        type_=config.category, num_noise=config.num_noise, max_group=config.max_group,
        adj_momentum=config.momentum, mesh_d=config.mesh_d, root_path=str(config.dataroot))


def training_payload(model: NeMoNet, banks: list[FeatureBank], optimizer: torch.optim.Optimizer,
                     state: TrainState, config: TrainConfig, epoch: int,
                     data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to use the model and to resume training exactly; ``data`` describes
    the training data (``image_scale``, ``synthetic``)."""
    return {
        "format": FORMAT,
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
        "rng": rng_state(),
        "config": config_dict(config),
        "history": state.history,
        "data": dict(data or {}),
    }


def restore_training(ckpt: dict[str, Any], model: NeMoNet, banks: list[FeatureBank], optimizer: torch.optim.Optimizer,
                     config: TrainConfig, device: torch.device, path: Path) -> TrainState:
    """Load a checkpoint written by :func:`training_payload` into freshly built objects."""
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a nemopose training checkpoint (an original checkpoint cannot be resumed; "
                         "use it for extraction)")
    saved = upgrade_config_keys(ckpt["config"])
    mismatched = [k for k in RESUME_KEYS if k in saved and saved[k] != config_dict(config)[k]]
    if mismatched:
        raise CheckpointError(f"{path}: cannot resume, settings differ: "
                         + ", ".join(f"{k} {saved[k]!r} -> {config_dict(config)[k]!r}" for k in mismatched)
                         + " (use another --exproot or --no-resume)")
    for key in ("batch_size", "lr", "lr_schedule", "accumulate", "seed", "temperature", "clutter_prior"):
        if saved.get(key) != config_dict(config)[key]:
            log.warning("resuming with %s = %r (checkpoint: %r)", key, config_dict(config)[key], saved.get(key))
    saved_precision = saved.get("precision", "fp32")       # checkpoints before the option: fp32
    if saved_precision != config.precision:
        log.warning("resuming in %s a run trained so far in %s (allowed: the weights and optimiser state are "
                    "float32 either way)", config.precision, saved_precision)
    if len(ckpt["banks"]) != len(banks) or ckpt["num_vertices"] != [b.num_vertices for b in banks]:
        raise ValueError(f"{path}: banks for vertex counts {ckpt['num_vertices']}, meshes have "
                         f"{[b.num_vertices for b in banks]}")
    model.load_state_dict(ckpt["state"])
    for bank, bank_state in zip(banks, ckpt["banks"]):
        bank.load_state_dict(bank_state)
    optimizer.load_state_dict(ckpt["optimizer"])
    for p, g in zip(model.parameters(), ckpt["pending_grad"]):
        p.grad = None if g is None else g.to(device)
    set_rng_state(ckpt["rng"])
    return TrainState(epoch=ckpt["epoch"] + 1, iteration=ckpt["iteration"], history=list(ckpt.get("history", [])))
