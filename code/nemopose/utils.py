"""Small shared helpers: atomic file writes (with the user's umask), logging set-up, seeding."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int | str = logging.INFO) -> None:
    """Configure root logging once for an entry point (library code only gets loggers)."""
    if isinstance(level, str):
        level = getattr(logging, level.upper())
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%H:%M:%S")


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's file-creation mask, e.g. ``0o022``.

    Linux reports it in ``/proc/self/status``, which reads it without touching it. Elsewhere
    the only way is ``os.umask``, which sets it while reading: it is set to ``0o077`` for that
    instant (under a lock), so a file another thread creates meanwhile can only come out more
    private than asked, never more open.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666`` less the umask (0644 under 022)."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    An interrupted write never leaves a truncated file at ``path``. ``suffix`` keeps the
    temporary file's extension where a writer needs it (``np.savez`` appends ``.npz``).
    The file ends with the mode any other new file gets (:func:`default_file_mode`, 0644
    under umask 022), not ``mkstemp``'s private 0600, so others on a shared machine can
    read the results when the user's umask lets them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, default_file_mode())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_savez(path: str | os.PathLike, compressed: bool = False, **arrays: Any) -> None:
    """``np.savez`` to ``path`` atomically (the name is kept exactly, no extra ``.npz``)."""
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line (a log record); whole lines are written in one call."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record, default=_json_default) + "\n")


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
