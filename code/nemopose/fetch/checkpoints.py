"""The authors' released NeMo models (``CHECKPOINT=authors``): downloaded once, unpacked into
the experiment's checkpoint folder and listed in ``authors_checkpoints.json`` there (which
:meth:`nemopose.experiment.Experiment.authors_checkpoints` reads)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from .. import constants
from ..experiment import AUTHORS_MARKER, Experiment, parse_checkpoint_name
from ..utils import atomic_write_json
from .archive import safe_extract
from .download import DownloadError, fetch_archive

log = logging.getLogger(__name__)


def fetch_authors_checkpoints(exp: Experiment, *, mirror: str | os.PathLike | None = None, download: str = "auto",
                              keep_archive: bool = False, progress: bool = True) -> dict[str, Path]:
    """Download and unpack the authors' released models for ``exp.mesh_d`` (METHOD.md §13:
    ``NeMo_Single_799.zip`` / ``NeMo_Multi_799.zip``, Google Drive, or ``<mirror>/<name>``)
    into ``exp.checkpoints``; nothing happens when they are there already.

    The archive's ``saved_model_<cat>_799.pth`` files are taken at any depth. A file of ours
    with the same name is never overwritten (an error says to use another EXPROOT).

    Returns:
        {category: checkpoint file}.
    """
    have = exp.authors_checkpoints()
    if have:
        return have
    name, drive_id = constants.AUTHORS_CHECKPOINTS[exp.mesh_d]
    exp.checkpoints.mkdir(parents=True, exist_ok=True)
    archive = fetch_archive(name, [f"drive:{drive_id}"], exp.exproot, mirror=mirror, download=download,
                            progress=progress)
    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix=".authors-", dir=exp.exproot) as tmp:
        safe_extract(archive, Path(tmp) / "unpacked")
        for path in sorted(Path(tmp).rglob("*.pth")):
            parsed = parse_checkpoint_name(path.name)
            if parsed is None or parsed[1] != constants.EPOCH_RELEASED or parsed[0] in files:
                continue
            target = exp.checkpoints / path.name
            if target.exists():
                raise DownloadError(f"{target} exists and is not one of the authors' models recorded in "
                                    f"{AUTHORS_MARKER}; evaluate them with another EXPROOT")
            shutil.move(str(path), target)
            files[parsed[0]] = path.name
    if not files:
        raise DownloadError(f"{archive}: no saved_model_<category>_{constants.EPOCH_RELEASED}.pth inside; "
                            "is it the authors' NeMo archive?")
    atomic_write_json(exp.checkpoints / AUTHORS_MARKER, {"archive": name, "files": files})
    if not keep_archive:
        archive.unlink()
    log.info("the authors' models for %s unpacked into %s", ", ".join(sorted(files)), exp.checkpoints)
    return exp.authors_checkpoints()
