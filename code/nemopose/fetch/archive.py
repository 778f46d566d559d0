"""Unpacking zip and tar archives safely, atomically, and into folders that already exist.

:func:`safe_extract` checks every member before it writes anything: an absolute name, a drive
letter, a ``..`` component, a link whose target lies outside, a member inside a linked folder,
or a device/FIFO is an :class:`UnsafeArchiveError` naming the member. It then extracts into a
hidden temporary folder next to the target (same file system) and moves the entries into
place with renames, so an interrupted extraction never looks finished. Several archives can
fill one folder (the three OccludedPASCAL3D levels): each entry is moved in at the shallowest
level that does not exist yet.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

from .download import DownloadError, UnsafeArchiveError

logger = logging.getLogger(__name__)

# Folders that macOS's archiver adds beside the real content; never extracted.
IGNORED_TOP = ("__MACOSX",)
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class _Member:
    """One archive entry, checked: ``parts`` is its safe relative path."""

    name: str                  # as stored, for messages
    parts: tuple[str, ...]
    kind: str                  # "dir" | "file" | "symlink" | "hardlink"
    target: str = ""           # link target (symlink: relative to the member; hardlink: archive path)
    open: Callable[[], IO[bytes]] | None = None


def single_top_folder(names: Iterable[str]) -> str | None:
    """The one folder every entry lies in (``'PASCAL3D+_release1.1'``), or None.

    Args:
        names: member names; folders end with ``/`` (as zip stores them and as
            :func:`archive_members` returns them). ``__MACOSX/`` entries are ignored.

    Returns:
        The folder name, or None when entries sit at the root or under several folders.
    """
    tops = set()
    for name in names:
        parts = _split(name)
        if not parts or parts[0] in IGNORED_TOP:
            continue
        if len(parts) == 1 and not name.endswith("/"):
            return None  # a file at the root
        tops.add(parts[0])
    return tops.pop() if len(tops) == 1 else None


def archive_members(archive: str | os.PathLike) -> list[str]:
    """Member names of a zip or tar archive, folders with a trailing ``/``."""
    with _open_archive(Path(archive)) as (kind, handle):
        if kind == "zip":
            return handle.namelist()
        return [m.name.rstrip("/") + "/" if m.isdir() else m.name for m in handle.getmembers()]


def safe_extract(archive: str | os.PathLike, target_dir: str | os.PathLike, *,
                 strip_top: str | None = None, overwrite: bool = False) -> Path:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into ``target_dir``, refusing unsafe members.

    Args:
        archive: the archive file.
        target_dir: where its entries go; may already exist (entries are merged in).
        strip_top: a folder name removed from the front of every member when ALL members lie
            under it (``OccludedPASCAL3D_FGL1_BGL1/images/...`` -> ``images/...``); an archive
            whose members are not all under it is extracted as it is.
        overwrite: replace files and folders that already exist at a member's path; when
            False they are kept (and counted in a log line).

    Returns:
        ``target_dir``.

    Raises:
        UnsafeArchiveError naming the member (nothing is written anywhere);
        DownloadError when the file is not a readable archive.
    """
    archive, target_dir = Path(archive), Path(target_dir)
    with _open_archive(archive) as (kind, handle):
        members = _zip_members(archive, handle) if kind == "zip" else _tar_members(archive, handle)
        members = _strip(members, strip_top)
        _check_tree(archive, members)  # on the final layout; all checks precede any write
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.extracting-", dir=target_dir.parent))
        try:
            work = tmp / "content"  # made with the usual permissions (mkdtemp's folder is 0700)
            work.mkdir()
            n_files = _write(archive, members, work)
            kept: list[Path] = []
            _merge(work, target_dir, overwrite, kept)
        except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError) as exc:
            raise DownloadError(f"{archive}: extraction into {target_dir} failed ({exc}); the archive may "
                                "be damaged: delete it and download it again") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if kept:
        logger.warning("%s: kept %d entries that already existed in %s (overwrite=False), e.g. %s",
                       archive.name, len(kept), target_dir, kept[0])
    logger.debug("%s: unpacked %d files into %s", archive.name, n_files, target_dir)
    return target_dir


def unpack_archive(archive: str | os.PathLike, target_dir: str | os.PathLike, *,
                   strip_top: str | None = None, overwrite: bool = False, keep_archive: bool = False) -> Path:
    """:func:`safe_extract`, then delete the archive unless ``keep_archive``; returns ``target_dir``.

    The archive is deleted only after a successful extraction, so a failed or interrupted run
    can extract it again.
    """
    out = safe_extract(archive, target_dir, strip_top=strip_top, overwrite=overwrite)
    if not keep_archive:
        Path(archive).unlink()
        logger.info("removed %s", archive)
    return out


# ----------------------------------------------------------------------------- reading members


@contextlib.contextmanager
def _open_archive(archive: Path) -> Iterator[tuple[str, zipfile.ZipFile | tarfile.TarFile]]:
    """Yield ("zip", ZipFile) or ("tar", TarFile); a file that is neither is a DownloadError."""
    if not archive.is_file():
        raise DownloadError(f"{archive}: archive not found")
    try:
        if zipfile.is_zipfile(archive):
            handle, kind = zipfile.ZipFile(archive), "zip"
        elif tarfile.is_tarfile(archive):
            handle, kind = tarfile.open(archive), "tar"
        else:
            raise DownloadError(f"{archive}: not a zip or tar archive (a truncated download or an HTML "
                                "error page saved under its name?); delete it and download it again")
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise DownloadError(f"{archive}: cannot read the archive ({exc}); delete it and download it "
                            "again") from exc
    with handle:
        yield kind, handle


def _split(name: str) -> tuple[str, ...]:
    return tuple(c for c in name.replace("\\", "/").split("/") if c not in ("", "."))


def _unsafe(archive: Path, name: str, problem: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"unsafe archive {archive}: member {name!r} {problem}; nothing was extracted. Do not use this "
        "archive: delete it and download it again from a trusted source.")


def _check_path(archive: Path, name: str, path: str, what: str = "") -> tuple[str, ...]:
    """Safe relative parts of ``path`` or an UnsafeArchiveError naming the member."""
    what = what or "has"
    unix = path.replace("\\", "/")
    if unix.startswith("/"):
        raise _unsafe(archive, name, f"{what} an absolute path (outside the target folder)")
    if re.match(r"^[A-Za-z]:", unix):
        raise _unsafe(archive, name, f"{what} a drive letter (outside the target folder)")
    if ".." in unix.split("/"):
        raise _unsafe(archive, name, f"{what} a '..' component (path traversal outside the target folder)")
    parts = _split(unix)
    if not parts:
        raise _unsafe(archive, name, "has an empty name")
    return parts


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[_Member]:
    members = []
    for info in zf.infolist():
        parts = _check_path(archive, info.filename, info.filename)
        ftype = stat.S_IFMT(info.external_attr >> 16)  # unix mode, 0 for archives made elsewhere
        if info.is_dir():
            members.append(_Member(info.filename, parts, "dir"))
        elif ftype == stat.S_IFLNK:
            members.append(_Member(info.filename, parts, "symlink", zf.read(info).decode("utf-8")))
        elif ftype in (0, stat.S_IFREG):
            members.append(_Member(info.filename, parts, "file", open=lambda info=info: zf.open(info)))
        else:
            raise _unsafe(archive, info.filename, "is a device, FIFO or socket")
    return members


def _tar_members(archive: Path, tf: tarfile.TarFile) -> list[_Member]:
    members = []
    for m in tf.getmembers():
        parts = _check_path(archive, m.name, m.name)
        if m.isdir():
            members.append(_Member(m.name, parts, "dir"))
        elif m.isreg():
            members.append(_Member(m.name, parts, "file", open=lambda m=m: tf.extractfile(m)))
        elif m.issym():
            members.append(_Member(m.name, parts, "symlink", m.linkname))
        elif m.islnk():
            _check_path(archive, m.name, m.linkname, "links to a file with")
            members.append(_Member(m.name, parts, "hardlink", m.linkname))
        else:
            raise _unsafe(archive, m.name, "is a device, FIFO or socket")
    return members


def _check_tree(archive: Path, members: list[_Member]) -> None:
    """Symlinks must resolve inside the archive's own tree, and nothing may be written through
    one (``a -> .`` followed by ``a/b -> ../x`` would otherwise escape); no member may lie
    under a path that is a file (or link) in the archive."""
    links = {m.parts for m in members if m.kind == "symlink"}
    files = {m.parts: m.name for m in members if m.kind != "dir"}
    for m in members:
        above = next((m.parts[:i] for i in range(1, len(m.parts)) if m.parts[:i] in files), None)
        if above is not None and above not in links:
            raise DownloadError(f"{archive}: member {m.name!r} lies under {files[above]!r}, which is a file "
                                "in the same archive; the archive is damaged: delete it and download it again")
        if m.kind == "dir" and m.parts in files:
            raise DownloadError(f"{archive}: {m.name!r} is both a folder and a file in the archive; the "
                                "archive is damaged: delete it and download it again")
        if m.kind == "symlink":
            target = m.target.replace("\\", "/")
            resolved = posixpath.normpath(posixpath.join("/".join(m.parts[:-1]), target))
            if target.startswith("/") or re.match(r"^[A-Za-z]:", target) or resolved.split("/")[0] == "..":
                raise _unsafe(archive, m.name, f"is a link to {m.target!r}, outside the target folder")
        if any(m.parts[:i] in links for i in range(1, len(m.parts))):
            raise _unsafe(archive, m.name, "lies inside a linked folder (it could be written outside)")


def _strip(members: list[_Member], top: str | None) -> list[_Member]:
    """Drop ``__MACOSX`` entries and, when all members are under ``top``, that first component."""
    members = [m for m in members if m.parts[0] not in IGNORED_TOP]
    if top and members and all(m.parts[0] == top and (len(m.parts) > 1 or m.kind == "dir") for m in members):
        def cut(m: _Member) -> _Member:
            target = "/".join(_split(m.target)[1:]) if m.kind == "hardlink" else m.target
            return _Member(m.name, m.parts[1:], m.kind, target, m.open)
        members = [cut(m) for m in members if len(m.parts) > 1]
    return members


# ----------------------------------------------------------------------------- writing


def _write(archive: Path, members: list[_Member], root: Path) -> int:
    """Create every member under ``root`` (an empty temporary folder); returns the file count."""
    real_root = os.path.realpath(root)
    n_files = 0
    for m in members:
        path = root.joinpath(*m.parts)
        parent = os.path.realpath(path.parent)
        if os.path.commonpath([real_root, parent]) != real_root:  # the checks above make this unreachable
            raise _unsafe(archive, m.name, "would be written outside the target folder")
        if m.kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.is_file():
            path.unlink()  # a member stored twice: the later copy wins, as with unzip/tar
        if m.kind == "symlink":
            os.symlink(m.target, path)
        elif m.kind == "hardlink":
            source = root.joinpath(*_split(m.target))
            if not source.is_file():
                raise DownloadError(f"{archive}: member {m.name!r} is a hard link to {m.target!r}, which "
                                    "is not a file extracted before it")
            shutil.copyfile(source, path)
            n_files += 1
        else:
            with m.open() as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK_BYTES)
            n_files += 1
    return n_files


def _merge(src: Path, dst: Path, overwrite: bool, kept: list[Path]) -> None:
    """Move ``src`` onto ``dst`` at the shallowest level that does not exist yet."""
    if not dst.exists() and not dst.is_symlink():
        os.replace(src, dst)
        return
    if src.is_dir() and not src.is_symlink() and dst.is_dir() and not dst.is_symlink():
        for child in sorted(src.iterdir()):
            _merge(child, dst / child.name, overwrite, kept)
        return
    if not overwrite:
        kept.append(dst)
        return
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    else:
        dst.unlink()
    os.replace(src, dst)
