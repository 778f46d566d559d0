"""Shared test fixtures: the real and golden data in ../shared/data, random generators."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Without a GPU, Triton kernels (nemopose.score_triton) run in Triton's interpreter; the flag
# must be set before triton is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _find_shared() -> Path | None:
    candidates = [os.environ.get("NEMOPOSE_SHARED_DATA"), REPO.parent / "shared" / "data",
                  "/work/shared/data"]
    for cand in candidates:
        if cand and (Path(cand) / "real").is_dir() and (Path(cand) / "golden").is_dir():
            return Path(cand)
    return None


SHARED = _find_shared()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder with real/ and golden/ fixtures. Missing fixtures fail under CI
    (NEMOPOSE_REQUIRE_FIXTURES=1) and skip elsewhere."""
    if SHARED is None:
        msg = ("shared fixtures not found: set NEMOPOSE_SHARED_DATA to the folder holding "
               "real/ and golden/")
        if os.environ.get("NEMOPOSE_REQUIRE_FIXTURES"):
            pytest.fail(msg)
        pytest.skip(msg)
    return SHARED


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
    prepare.run(root, TINY_CATEGORIES, ["single", "multi"], occluded=True, synthetic_mode="yes",
                synthetic_size="tiny", seed=0, config=prepare.PrepareConfig(progress=False))
    return root
