"""Training checkpoints: names, saving, loading, and the authors' original format (SPEC 9, 13).

A checkpoint ``saved_model_<cat>_<epoch %02d>.pth`` is a dict. It keeps the original's keys
so that tools written for NeMo find what they expect:

- ``state``: the network's state dict (ours: our module names; original: DataParallel names
  ``module.net.extractor.*`` ..., see :mod:`nemopose.model`);
- ``memory``: list of bank tensors, one per mesh (vertex rows then clutter rows);
- ``timestamp``; ``args``: an ``argparse.Namespace`` with the original's flag names;

and adds what exact resumption needs: ``format``, ``model`` (how to rebuild the network),
``banks`` (bank state dicts, with the queue pointer), ``num_vertices``, ``epoch`` (the last
completed), ``iteration`` (the global iteration counter), ``optimizer``, ``pending_grad``
(gradients accumulated since the last optimiser step), ``rng`` and ``config``.

Rolling resume checkpoints ``resume_<cat>_<epoch>.pth`` have the same content.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .model import NeMoNet, from_original_state_dict, is_original_state_dict
from .utils import atomic_torch_save

log = logging.getLogger(__name__)

FORMAT = "nemopose-train-1"
_SAVED = re.compile(r"^(?:3D\d+_points1)?saved_model_(?P<cat>[a-z]+)_(?P<epoch>\d+)\.pth$")
_RESUME = re.compile(r"^resume_(?P<cat>[a-z]+)_(?P<epoch>\d+)\.pth$")


def experiment_dir(exproot: str | os.PathLike, mesh_d: str, azimuth_bins: str = "") -> Path:
    """``<exproot>/NeMo_<mesh_d>/`` (the original TrainNeMo.sh's SAVED_NETWORK_PATH); with an
    unseen-pose azimuth mask ``<exproot>/NeMo_<mesh_d>_azum_<mask>/`` (the original's suffix)."""
    return Path(exproot) / (f"NeMo_{mesh_d}" + (f"_azum_{azimuth_bins}" if azimuth_bins else ""))


def checkpoint_name(category: str, epoch: int) -> str:
    return f"saved_model_{category}_{epoch:02d}.pth"


def resume_name(category: str, epoch: int) -> str:
    return f"resume_{category}_{epoch:02d}.pth"


def list_checkpoints(folder: str | os.PathLike, category: str, include_resume: bool = False) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of a category's checkpoints in ``folder``, sorted by epoch. Also finds
    the original's names (``3D512_points1saved_model_<cat>_799.pth``)."""
    folder = Path(folder)
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _SAVED.match(p.name) or (_RESUME.match(p.name) if include_resume else None)
            if m and m.group("cat") == category:
                found.append((int(m.group("epoch")), p))
    # at equal epochs prefer the saved_model file
    return sorted(found, key=lambda t: (t[0], t[1].name.startswith("saved_model") or "points1" in t[1].name))


def final_checkpoint(folder: str | os.PathLike, category: str) -> Path:
    """The highest-epoch ``saved_model_<cat>_*.pth`` in ``folder`` (what extraction loads)."""
    found = list_checkpoints(folder, category)
    if not found:
        raise FileNotFoundError(f"no checkpoint saved_model_{category}_*.pth in {folder}; run TrainNeMo.sh first")
    return found[-1][1]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (ours or the original's) without unpickling arbitrary objects
    (``weights_only``; the original's ``argparse.Namespace`` is allowed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report the file, whatever torch raised
        raise ValueError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or "state" not in ckpt or "memory" not in ckpt:
        raise ValueError(f"{path}: not a NeMo checkpoint (needs 'state' and 'memory')")
    return ckpt


def is_original(ckpt: dict[str, Any]) -> bool:
    return ckpt.get("format") != FORMAT and is_original_state_dict(ckpt["state"])


def load_network(ckpt: dict[str, Any] | str | os.PathLike, device: torch.device | str = "cpu",
                 test_head_bias: bool = False) -> tuple[NeMoNet, list[torch.Tensor], dict[str, Any]]:
    """Rebuild the network of a checkpoint (ours or the original's) for feature extraction.

    Returns:
        (model in eval mode on ``device``, bank memories ``[(nV + Q, d)]`` per mesh,
        info dict with ``backbone``, ``d_feature``, ``epoch``, ``original``).
    """
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    if is_original(ckpt):
        state = from_original_state_dict(ckpt["state"])
        d_feature = state["head.weight"].shape[0]
        model = NeMoNet("resnetext", d_feature=d_feature, pretrained="random", test_head_bias=test_head_bias)
        info = {"backbone": "resnetext", "d_feature": d_feature, "original": True,
                "epoch": None, "category": getattr(ckpt.get("args"), "type_", None)}
    else:
        spec = ckpt["model"]
        model = NeMoNet(spec["backbone"], d_feature=spec["d_feature"], pretrained="random",
                        test_head_bias=test_head_bias,
                        light_widths=tuple(spec.get("light_widths", (16, 32, 64, 128, 256))),
                        light_norm=spec.get("light_norm", "batch"))
        state = ckpt["state"]
        info = {"backbone": spec["backbone"], "d_feature": spec["d_feature"], "original": False,
                "epoch": ckpt.get("epoch"), "category": ckpt.get("category")}
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
