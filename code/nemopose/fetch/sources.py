"""Where the datasets' archives come from and where they are unpacked in DATAROOT (METHOD.md §6).

    PASCAL3D+_release1.1.zip            -> $DATAROOT/PASCAL3D+_release1.1/
    Image_subsets.zip                   -> $DATAROOT/PASCAL3D+_release1.1/Image_subsets/
    OccludedPASCAL3D_FGL1_BGL1.zip ...  -> $DATAROOT/OccludedPASCAL3D/{images,annotations,lists}/
                                           (the three levels merge into one folder)

:func:`fetch_datasets` downloads (resumably, :mod:`nemopose.fetch.download`) and unpacks
(:mod:`nemopose.fetch.archive`) whatever is missing. Archives are saved as ``$DATAROOT/<name>`` and
deleted only after a successful extraction, so an interrupted run is simply run again: it
continues a ``.part`` and re-extracts an archive that was downloaded but not unpacked.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .. import constants
from .archive import archive_members, safe_extract, single_top_folder
from .download import DOWNLOAD_MODES, DownloadError, UnsafeArchiveError, fetch_archive, human_url, mirror_url
from ..data.layout import OCCLUDED_DIR, RELEASE_DIR

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """One archive: its name, where to get it, and what it unpacks to.

    Attributes:
        name: file name (also its name under a mirror and in DATAROOT while unpacking).
        urls: tried in order; ``drive:<id>`` is a Google Drive file.
        dest: folder, relative to DATAROOT, that receives the archive's content.
        content: names the archive holds at its root. When every member lies under one other
            folder (``PASCAL3D+_release1.1/``, ``Image_subsets/``, ``OccludedPASCAL3D_X/``),
            that wrapper is stripped; a single top folder that is one of these is kept.
        markers: glob patterns, relative to DATAROOT, that all match a folder once unpacked.
        description: what it is, for messages.
    """

    name: str
    urls: tuple[str, ...]
    dest: str
    content: tuple[str, ...]
    markers: tuple[str, ...]
    description: str

    def target(self, dataroot: str | os.PathLike) -> Path:
        return Path(dataroot) / self.dest

    def present(self, dataroot: str | os.PathLike) -> bool:
        """True when every marker matches an existing folder under ``dataroot``."""
        root = Path(dataroot)
        return all(any(p.is_dir() for p in root.glob(pattern)) for pattern in self.markers)


RELEASE = Source(
    name="PASCAL3D+_release1.1.zip",
    # HTTPS first (METHOD.md §6 prefers it). NOT verified from this offline machine: CVGL publishes
    # its dataset archives over HTTPS under cvgl.stanford.edu/data2/. The FTP address is the
    # one the authors' script used. A wrong first address costs one quick HTTP error.
    urls=("https://cvgl.stanford.edu/data2/PASCAL3D+_release1.1.zip",
          "ftp://cs.stanford.edu/cs/cvgl/PASCAL3D+_release1.1.zip"),
    dest=RELEASE_DIR,
    content=("Images", "Annotations", "Image_sets", "CAD"),
    markers=(f"{RELEASE_DIR}/Images", f"{RELEASE_DIR}/Annotations"),
    description="PASCAL3D+ release 1.1 (Stanford CVGL, several GB)",
)
IMAGE_SUBSETS = Source(
    name="Image_subsets.zip",
    urls=("drive:1NsoVXW8ngQCqTHHFSW8YYsCim9EjiXS7",),
    dest=f"{RELEASE_DIR}/Image_subsets",
    content=(),
    markers=(f"{RELEASE_DIR}/Image_subsets",),
    description="NeMo's Image_subsets (per-subtype image lists)",
)
OCCLUDED_DRIVE_IDS = {
    "FGL1_BGL1": "1X-xwyypLTm9vr-boLYPIPhGxcYaPHSNF",
    "FGL2_BGL2": "1dNP8YE3RJ9Pzr_jQ11O6f6eYgYnq9ROp",
    "FGL3_BGL3": "1GsHCyAYnqcJsAgiih1vKpDQxzF3ouFxS",
}
OCCLUDED = {
    level: Source(
        name=f"OccludedPASCAL3D_{level}.zip",
        urls=(f"drive:{file_id}",),
        dest=OCCLUDED_DIR,
        content=("images", "annotations", "lists"),
        markers=(f"{OCCLUDED_DIR}/images/*{level}",),
        description=f"OccludedPASCAL3D+ level {level}",
    )
    for level, file_id in ((lv, OCCLUDED_DRIVE_IDS[lv]) for lv in constants.OCCLUSION_LEVELS)
}


def dataset_sources(occluded_levels: Iterable[str] = ()) -> list[Source]:
    """The release, its Image_subsets, and one archive per occlusion level asked for.

    Args:
        occluded_levels: levels as accepted by ``constants.parse_occlusion_level``
            (``FGL1_BGL1``, ``L1``, ``1``); ``L0``/empty adds nothing.
    """
    levels = [lv for lv in (constants.parse_occlusion_level(x) for x in occluded_levels) if lv]
    return [RELEASE, IMAGE_SUBSETS] + [OCCLUDED[lv] for lv in dict.fromkeys(levels)]


def missing_archives(dataroot: str | os.PathLike, occluded_levels: Iterable[str] = ()) -> list[Source]:
    """Sources whose content is not (completely) in ``dataroot``, by their markers: the release
    needs ``Images`` and ``Annotations``, the subsets ``Image_subsets``, a level some
    ``OccludedPASCAL3D/images/*<LEVEL>`` folder."""
    return [s for s in dataset_sources(occluded_levels) if not s.present(dataroot)]


def unpack_source(source: Source, archive: str | os.PathLike, dataroot: str | os.PathLike, *,
                  keep_archive: bool = False, overwrite: bool = False) -> Path:
    """Extract ``archive`` into ``source.target(dataroot)``, check the markers, then delete it.

    Returns:
        The folder it was unpacked into.

    Raises:
        UnsafeArchiveError (nothing written); DownloadError when the archive is unreadable or
        its content is not what ``source`` describes (the archive is then kept).
    """
    archive = Path(archive)
    top = single_top_folder(archive_members(archive))
    strip = top if top is not None and top not in source.content else None
    target = safe_extract(archive, source.target(dataroot), strip_top=strip, overwrite=overwrite)
    if not source.present(dataroot):
        raise DownloadError(f"{archive} was unpacked into {target}, but {', '.join(source.markers)} "
                            f"is still missing under {dataroot}: it does not look like {source.description}. "
                            "Check the archive (it was kept) or delete it and download it again.")
    if not keep_archive:
        archive.unlink()
    return target


def _where_to_get(source: Source, mirror: str | os.PathLike | None) -> str:
    if mirror is not None:
        return mirror_url(mirror, source.name)
    return " or ".join(human_url(u) for u in source.urls)


def fetch_datasets(dataroot: str | os.PathLike, occluded_levels: Iterable[str] = (), *,
                   mirror: str | os.PathLike | None = None, download: str = "auto",
                   keep_archives: bool = False, progress: bool = True) -> list[str]:
    """Download and unpack every dataset archive whose content is missing from ``dataroot``.

    An archive already lying at ``$DATAROOT/<name>`` is unpacked without downloading; while
    ``keep_archives`` is False such an archive also means an earlier run stopped before
    finishing it, so it is unpacked again (existing files are kept) even if the markers exist.

    Args:
        dataroot: the data folder (``$DATAROOT``).
        occluded_levels: which OccludedPASCAL3D levels to fetch (see :func:`dataset_sources`).
        mirror: base URL or local folder holding the archives under their names; when given it
            is the only source.
        download: ``auto``/``yes`` downloads what is missing; ``no`` never touches the network.
        keep_archives: keep the archives after unpacking (default: delete them).
        progress: tqdm bars for downloads.

    Returns:
        Names of the archives unpacked by this call (empty when nothing was missing).

    Raises:
        DownloadError: with ``download='no'``, one error listing every missing archive, where it
            goes and where to get it; otherwise the failure of an archive (after trying the
            others; several failures are listed together). UnsafeArchiveError stops at once.
    """
    if download not in DOWNLOAD_MODES:
        raise ValueError(f"download must be one of {DOWNLOAD_MODES}, got {download!r}")
    dataroot = Path(dataroot)
    todo = [s for s in dataset_sources(occluded_levels)
            if not s.present(dataroot) or ((dataroot / s.name).is_file() and not keep_archives)]
    if download == "no":
        absent = [s for s in todo if not (dataroot / s.name).is_file()]
        if absent:
            lines = "\n".join(f"  - {s.name} ({s.description}): put it at {dataroot / s.name} "
                              f"(it unpacks into {s.target(dataroot)}); get it from "
                              f"{_where_to_get(s, mirror)}" for s in absent)
            raise DownloadError(f"{len(absent)} dataset archive(s) missing from {dataroot} and downloading "
                                f"is disabled:\n{lines}")
    done, failures = [], []
    for source in todo:
        try:
            archive = fetch_archive(source.name, source.urls, dataroot, mirror=mirror, download=download,
                                    progress=progress)
            target = unpack_source(source, archive, dataroot, keep_archive=keep_archives)
        except UnsafeArchiveError:
            raise
        except DownloadError as exc:
            logger.error("%s: %s", source.name, exc)
            failures.append((source, exc))
            continue
        logger.info("%s: unpacked into %s%s", source.name, target,
                    " (archive kept)" if keep_archives else " (archive removed)")
        done.append(source.name)
    if len(failures) == 1:
        raise failures[0][1]
    if failures:
        raise DownloadError(f"{len(failures)} dataset archives could not be fetched:\n"
                            + "\n".join(f"  - {s.name}: {exc}" for s, exc in failures))
    return done
