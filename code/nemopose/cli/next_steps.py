"""What to run next: the commands that an error names when something is missing.

An error that stops at "run TrainNeMo.sh first" sends a user on a fresh clone to a second
error ("run PrepareData.sh first"). The helpers here name the whole chain that works from
where the user stands (prepare, then train, then infer), with the variables that the user
set (``DATAROOT``, ``EXPROOT``, ``CATEGORIES``, ``MESH_DIMENSIONS``), the categories that
are prepared, and where the demo's checkpoints are when a tool looked for them in ``exp/``.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Sequence

from ..data import layout

DEFAULT_DATAROOT = "./data"
DEFAULT_EXPROOT = "./exp"
DEMO_FOLDER = "synthetic_demo"       # code/demo.sh: <root>/synthetic_demo[_seed<N>] for data and experiments
REPO = Path(__file__).resolve().parents[3]   # code/nemopose/cli/next_steps.py -> the repository

DRIVERS = {"prepare": "./PrepareData.sh", "train": "./TrainNeMo.sh", "infer": "./InferenceNeMo.sh"}


def _same(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def driver_command(step: str, *, dataroot: str | os.PathLike | None = None, exproot: str | os.PathLike | None = None,
                   categories: Sequence[str] | None = None, mesh_d: str = "single") -> str:
    """``[VARIABLES] ./Driver.sh`` for ``step`` (prepare, train, infer), naming only the
    variables that differ from the drivers' defaults."""
    env: list[tuple[str, str]] = []
    if dataroot is not None and not _same(dataroot, DEFAULT_DATAROOT):
        env.append(("DATAROOT", str(dataroot)))
    if exproot is not None and step != "prepare" and not _same(exproot, DEFAULT_EXPROOT):
        env.append(("EXPROOT", str(exproot)))
    if categories:
        env.append(("CATEGORIES", " ".join(categories)))
    if step == "prepare" and dataroot is not None:
        env += _synthetic_settings(dataroot)
    if mesh_d != "single" and step != "prepare":     # PrepareData.sh builds both meshes by default
        env.append(("MESH_DIMENSIONS", mesh_d))
    return " ".join([f"{k}={shlex.quote(v)}" for k, v in env] + [DRIVERS[step]])


def _synthetic_settings(dataroot: str | os.PathLike) -> list[tuple[str, str]]:
    """The variables that make PrepareData.sh add to the synthetic dataset at ``dataroot``
    (its size and seed, from the marker) instead of refusing other settings."""
    marker = layout.release_root(dataroot) / layout.SYNTHETIC_MARKER
    try:
        config = json.loads(marker.read_text()).get("config", {})
    except (OSError, ValueError, AttributeError):
        return []
    env = [("SYNTHETIC", "yes"), ("SYNTHETIC_SIZE", str(config.get("size", "demo")))]
    if config.get("seed"):
        env.append(("SEED", str(config["seed"])))
    return env


def chain(steps: Sequence[str], **where) -> str:
    """``run A, then B, then C`` for the steps still to do (keyword arguments as
    :func:`driver_command`)."""
    return "run " + ", then ".join(driver_command(step, **where) for step in steps)


def prepared_note(dataroot: str | os.PathLike, mesh_d: str, split: str = "train") -> str:
    """``prepared in <dataroot>: car, bus`` or ``nothing is prepared in <dataroot>``."""
    prepared = layout.prepared_categories(dataroot, mesh_d, split)
    if not prepared:
        return f"nothing is prepared in {dataroot} ({split}, {mesh_d} cuboid)"
    return f"prepared in {dataroot} ({split}, {mesh_d} cuboid): {', '.join(prepared)}"


def _shown(path: Path) -> str:
    """A path as a user would type it: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def demo_experiments(exproot: str | os.PathLike, mesh_d: str = "single") -> list[tuple[Path, str | None]]:
    """Experiment folders of ``code/demo.sh`` holding checkpoints, other than ``exproot``:
    ``(folder, dataroot it was trained on or None)``. Looked for under ``exproot``, under
    ``./exp`` and under the repository's ``exp/``."""
    from ..experiment import Experiment

    roots = [Path(exproot), Path(DEFAULT_EXPROOT), REPO / "exp"]
    found: dict[str, tuple[Path, str | None]] = {}
    for root in roots:
        if not root.is_dir():
            continue
        for folder in sorted(root.glob(f"{DEMO_FOLDER}*")):
            key = os.path.realpath(folder)
            if key in found or _same(folder, exproot) or not folder.is_dir():
                continue
            exp = Experiment(folder, mesh_d)
            trained = exp.trained_categories()
            if trained:
                found[key] = (folder, _trained_on(exp.train_config_path(trained[0]), folder))
    return list(found.values())


def _trained_on(config_path: Path, exproot: Path) -> str | None:
    """The dataroot recorded in a training configuration, as a path usable from here."""
    try:
        dataroot = json.loads(config_path.read_text()).get("dataroot")
    except (OSError, ValueError):
        return None
    if not dataroot:
        return None
    path = Path(dataroot)
    if not path.is_absolute() and not path.exists():
        # the demo runs from the repository root: its relative paths are relative to it
        path = REPO / path
    return _shown(path) if path.exists() else str(dataroot)


def demo_hint(exproot: str | os.PathLike, mesh_d: str = "single", *, flags: bool = False,
              command: str = "./InferenceNeMo.sh", with_dataroot: bool = True) -> str:
    """``; the demo's checkpoints are in exp/synthetic_demo (trained on data/synthetic_demo):
    EXPROOT=... DATAROOT=... ./InferenceNeMo.sh`` when demo checkpoints exist elsewhere
    (``flags``: ``--exproot ... --dataroot ...`` for a ``python -m`` tool; ``with_dataroot``
    False for a tool without ``--dataroot``); else empty."""
    found = demo_experiments(exproot, mesh_d)
    if not found:
        return ""
    folder, dataroot = found[0]
    dataroot = dataroot if with_dataroot else None
    where = _shown(folder)
    if flags:
        how = f"add --exproot {shlex.quote(where)}" + (f" --dataroot {shlex.quote(dataroot)}" if dataroot else "")
    else:
        how = f"EXPROOT={shlex.quote(where)}" + (f" DATAROOT={shlex.quote(dataroot)}" if dataroot else "") + \
            f" {command}"
    trained = f" (trained on {dataroot})" if dataroot else ""
    more = f"; also {', '.join(_shown(f) for f, _ in found[1:])}" if len(found) > 1 else ""
    return f"; the demo's checkpoints are in {where}{trained}: {how}{more}"


def missing_checkpoint_advice(dataroot: str | os.PathLike, exproot: str | os.PathLike, categories: Sequence[str] | None,
                              mesh_d: str = "single", occ_level: str = "", flags: bool = False) -> str:
    """What to run when ``categories`` (None: any) have no checkpoint in ``exproot``: the
    chain from the first missing step (prepare when their data is not prepared), the
    authors' models as the other way, and the demo's folders when they hold checkpoints."""
    wanted = list(categories) if categories else None
    need_prepare = [c for c in (wanted or []) if c not in layout.prepared_categories(dataroot, mesh_d, "train")] \
        if wanted else not layout.prepared_categories(dataroot, mesh_d, "train")
    steps = (["prepare"] if need_prepare else []) + ["train", "infer"]
    where = dict(dataroot=dataroot, exproot=exproot, categories=wanted, mesh_d=mesh_d)
    level = f" {occ_level}" if occ_level else ""
    authors = driver_command("infer", **where)
    text = f"{chain(steps, **where)}{level}; or evaluate the authors' released models" \
           f"{' (once prepared)' if need_prepare else ''}: CHECKPOINT=authors {authors}{level}"
    if need_prepare:
        text = f"{prepared_note(dataroot, mesh_d)}; {text}"
    return text + demo_hint(exproot, mesh_d, flags=flags)
