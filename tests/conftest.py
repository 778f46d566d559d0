"""Shared test fixtures: the real and golden data in tests/fixtures, random generators, tiny data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Without a GPU, Triton kernels (nemopose.solve.score_triton) run in Triton's interpreter; the flag
# must be set before triton is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def fixture_data() -> Path:
    """tests/fixtures: real/ (the authors' released cuboids, one real PASCAL3D+ car) and
    golden/ (outputs of the authors' code); their sources are in the READMEs there. They are
    part of the repository, so a missing file is a failure, never a skip."""
    for sub in ("real", "golden"):
        if not (FIXTURES / sub).is_dir():
            pytest.fail(f"test fixtures missing: {FIXTURES / sub} (they are part of the repository)")
    return FIXTURES


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


# ----------------------------------------------------------------------------- data

TINY_CATEGORIES = ["car", "aeroplane", "chair"]


@pytest.fixture(scope="session")
def tiny_dataroot(tmp_path_factory) -> Path:
    """A data root holding the tiny synthetic PASCAL3D+ for TINY_CATEGORIES, fully prepared
    by the PrepareData pipeline (single and multi meshes, occluded levels, image scale 0.5).
    Built once per session; tests must not modify it."""
    from nemopose.data import prepare

    root = tmp_path_factory.mktemp("tiny_synthetic")
    prepare.run(root, TINY_CATEGORIES, prepare.PrepareConfig(occluded=True, synthetic="yes", synthetic_size="tiny",
                                                            seed=0, progress=False))
    return root


@pytest.fixture(scope="session")
def demo_car(tmp_path_factory) -> tuple[Path, Path]:
    """(data root, experiment root): the demo-size synthetic car (120 training and 40 val
    images, no occluded sets), trained once per session with the demo preset (the light
    network, 16 epochs; about 2 minutes on 2 CPU cores). Shared by the predictor and
    inference outcome tests; tests must not write into it (link the checkpoints elsewhere).

    NEMOPOSE_TEST_DEMO_CAR=<folder> keeps it there across sessions (trained on first use):
    for .ci/breakages.py, which runs many sessions on code whose training is unchanged. Never
    set it while changing data preparation or training."""
    from nemopose.data import prepare
    from nemopose.train import config as train_config, loop as T

    kept = os.environ.get("NEMOPOSE_TEST_DEMO_CAR")
    root = Path(kept) if kept else tmp_path_factory.mktemp("demo_car")
    if kept and (root / "trained").is_file():
        return root / "data", root / "exp"
    if kept:
        shutil.rmtree(root, ignore_errors=True)
    prepare.run(root / "data", ["car"], prepare.PrepareConfig(mesh_dims=("single",), occluded=False, synthetic="yes",
                                                              synthetic_size="demo", progress=False))
    T.train(T.TrainConfig(**{**train_config.PRESETS["demo"], "dataroot": str(root / "data"),
                             "exproot": str(root / "exp"), "category": "car"}))
    if kept:
        (root / "trained").touch()
    return root / "data", root / "exp"


def linked_experiment(exproot: Path, dest: Path, mesh_d: str = "single") -> Path:
    """A new experiment root at ``dest`` whose checkpoints are hard links to those of
    ``exproot`` (so a test can write results without touching a shared fixture)."""
    (dest / f"NeMo_{mesh_d}").mkdir(parents=True)
    for f in (Path(exproot) / f"NeMo_{mesh_d}").glob("saved_model_*.pth"):
        os.link(f, dest / f"NeMo_{mesh_d}" / f.name)
    return dest
