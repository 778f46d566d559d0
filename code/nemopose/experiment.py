"""The experiment folder: every path that training, inference and the tools write or read
(what :mod:`nemopose.data.layout` is for the data folder).

    <exproot>/NeMo_<mesh_d><suffix>/             checkpoints of TrainNeMo.sh
        saved_model_<cat>_<epoch>.pth            (the original's names; also 3D512_points1saved_model_...)
        resume_<cat>_<epoch>.pth                 rolling resume checkpoint
        config_<cat>.json, train_log_<cat>.jsonl the training configuration, one JSON line per epoch
    <exproot>/Features_<mesh_d><suffix>/         feature files of the two-stage inference
        <cat>/saved_feature_<cat>_<mesh_d>.npz, <cat>_occ/<LEVEL>_saved_feature_<cat>_<mesh_d>.npz
    <exproot>/Accuracy_<mesh_d><suffix>/         results of InferenceNeMo.sh
        predictions_<level>.csv, accuracy_<level>.{txt,json,png}, <cat><LEVEL>.npz, summary.*
    <exproot>/Visualizations_<mesh_d><suffix>/   pictures of solved images

``<suffix>`` is empty, or ``_azum_<mask>`` for the unseen-pose setting (models trained on
the azimuth bins of a mask such as ``TFFTTFFT``; the original's folder suffix).

Which categories "all" means here: those with a checkpoint (:meth:`Experiment.trained_categories`).

The authors' released models (``CHECKPOINT=authors``) are unpacked into the checkpoint folder
once by :func:`nemopose.fetch.checkpoints.fetch_authors_checkpoints` and listed in ``authors_checkpoints.json`` there.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import constants
from .errors import NemoPoseError

log = logging.getLogger(__name__)

AUTHORS_MARKER = "authors_checkpoints.json"

_SAVED = re.compile(r"^(?:3D\d+_points1)?saved_model_(?P<cat>[a-z]+)_(?P<epoch>\d+)\.pth$")
_RESUME = re.compile(r"^resume_(?P<cat>[a-z]+)_(?P<epoch>\d+)\.pth$")


class CheckpointNotFound(NemoPoseError, FileNotFoundError):
    """No checkpoint matches what was asked for (the message says what to run)."""


def checkpoint_name(category: str, epoch: int) -> str:
    """``saved_model_<cat>_<epoch %02d>.pth`` (the original's name)."""
    return f"saved_model_{category}_{epoch:02d}.pth"


def resume_name(category: str, epoch: int) -> str:
    return f"resume_{category}_{epoch:02d}.pth"


def parse_checkpoint_name(name: str, include_resume: bool = False) -> tuple[str, int] | None:
    """(category, epoch) of a checkpoint file name, or None when it is not one."""
    m = _SAVED.match(name) or (_RESUME.match(name) if include_resume else None)
    return (m.group("cat"), int(m.group("epoch"))) if m else None


def list_checkpoints(folder: str | os.PathLike, category: str,
                     include_resume: bool = False) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of a category's checkpoints in ``folder``, sorted by epoch (at equal
    epochs the saved_model file last, so it wins)."""
    folder = Path(folder)
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            parsed = parse_checkpoint_name(p.name, include_resume)
            if parsed and parsed[0] == category:
                found.append((parsed[1], p))
    return sorted(found, key=lambda t: (t[0], not t[1].name.startswith("resume_")))


@dataclass(frozen=True)
class Experiment:
    """Paths of one experiment: ``exproot`` and the mesh dimension (and unseen-pose mask)."""

    exproot: Path
    mesh_d: str = "single"
    azimuth_bins: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "exproot", Path(self.exproot))
        constants.check_mesh_d(self.mesh_d)

    @property
    def suffix(self) -> str:
        return f"_{self.mesh_d}" + (f"_azum_{self.azimuth_bins}" if self.azimuth_bins else "")

    # ------------------------------------------------------------------ folders

    @property
    def checkpoints(self) -> Path:
        """``NeMo_<mesh_d>`` (the original TrainNeMo.sh's SAVED_NETWORK_PATH)."""
        return self.exproot / f"NeMo{self.suffix}"

    @property
    def features(self) -> Path:
        return self.exproot / f"Features{self.suffix}"

    @property
    def accuracy(self) -> Path:
        return self.exproot / f"Accuracy{self.suffix}"

    @property
    def visualizations(self) -> Path:
        return self.exproot / f"Visualizations{self.suffix}"

    # ------------------------------------------------------------------ training files

    def checkpoint_path(self, category: str, epoch: int) -> Path:
        return self.checkpoints / checkpoint_name(category, epoch)

    def resume_path(self, category: str, epoch: int) -> Path:
        return self.checkpoints / resume_name(category, epoch)

    def train_config_path(self, category: str) -> Path:
        return self.checkpoints / f"config_{category}.json"

    def train_log_path(self, category: str) -> Path:
        return self.checkpoints / f"train_log_{category}.jsonl"

    def list_checkpoints(self, category: str, include_resume: bool = False) -> list[tuple[int, Path]]:
        return list_checkpoints(self.checkpoints, category, include_resume)

    def trained_categories(self) -> list[str]:
        """Categories with a ``saved_model`` checkpoint: what "all" means for evaluation."""
        return [c for c in constants.CATEGORIES if self.list_checkpoints(c)]

    def final_checkpoint(self, category: str) -> Path:
        """The highest-epoch ``saved_model_<cat>_*.pth`` (what inference loads by default)."""
        found = self.list_checkpoints(category)
        if not found:
            from .cli import next_steps

            train = next_steps.driver_command("train", exproot=self.exproot, categories=[category], mesh_d=self.mesh_d)
            raise CheckpointNotFound(f"no checkpoint saved_model_{category}_*.pth in {self.checkpoints}; "
                                     f"run {train} first, or evaluate the authors' models "
                                     f"(CHECKPOINT=authors ./InferenceNeMo.sh)" +
                                     next_steps.demo_hint(self.exproot, self.mesh_d, flags=True))
        return found[-1][1]

    def authors_checkpoints(self) -> dict[str, Path]:
        """{category: file} of the authors' models unpacked here (empty when none)."""
        marker = self.checkpoints / AUTHORS_MARKER
        if not marker.is_file():
            return {}
        files = json.loads(marker.read_text())["files"]
        return {c: self.checkpoints / f for c, f in files.items() if (self.checkpoints / f).is_file()}

    def resolve_checkpoint(self, category: str, spec: str = "last") -> Path:
        """The checkpoint file for ``category``: ``last`` (highest epoch), an epoch number
        (``799``), ``authors`` (the authors' released model, see
        :func:`nemopose.fetch.checkpoints.fetch_authors_checkpoints`), or a file path (may contain ``{category}``)."""
        spec = str(spec)
        if spec == "last":
            return self.final_checkpoint(category)
        if spec == "authors":
            found = self.authors_checkpoints()
            if category not in found:
                raise CheckpointNotFound(f"no authors' checkpoint for {category} in {self.checkpoints} "
                                         f"({AUTHORS_MARKER}); InferenceNeMo.sh with CHECKPOINT=authors downloads them")
            return found[category]
        if spec.isdigit():
            for epoch, path in self.list_checkpoints(category):
                if epoch == int(spec):
                    return path
            raise CheckpointNotFound(f"no checkpoint of epoch {spec} for {category} in {self.checkpoints}")
        path = Path(spec.format(category=category))
        if not path.is_file():
            raise CheckpointNotFound(f"checkpoint {path} does not exist")
        return path

    # ------------------------------------------------------------------ inference files

    def feature_file(self, category: str, occ_level: str = "", rank: int = 0, world_size: int = 1) -> Path:
        """The original's feature-file location; ranks of a distributed run write parts."""
        name = f"saved_feature_{category}_{self.mesh_d}"
        if world_size > 1:
            name += f".part{rank}of{world_size}"
        if occ_level:
            return self.features / f"{category}_occ" / f"{occ_level}_{name}.npz"
        return self.features / category / f"{name}.npz"

    def predictions_csv(self, level: str) -> Path:
        return self.accuracy / f"predictions_{level or 'L0'}.csv"

    def accuracy_file(self, level: str, extension: str) -> Path:
        """``accuracy_<level>.<extension>`` (txt, json, png)."""
        return self.accuracy / f"accuracy_{level or 'L0'}.{extension}"

    def total_error_file(self, category: str, occ_level: str = "") -> Path:
        """The original's per-category record of errors (CalAccuracy.py reads ``total_error``)."""
        return self.accuracy / f"{category}{occ_level}.npz"

    def summary_file(self, extension: str) -> Path:
        return self.accuracy / f"summary.{extension}"
