"""benchmarks/gpu.sh: the one GPU benchmark command runs (and says so) without CUDA."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def run_gpu_sh(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NEMOPOSE_PYTHON=sys.executable)
    return subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA, gpu.sh runs the full benchmark")
def test_gpu_sh_without_cuda_says_so_and_exits_0():
    proc = run_gpu_sh()
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in proc.stdout
    assert not (REPO / "benchmarks" / ".venv").exists()


def test_gpu_benchmark_table_on_cpu():
    """The same script on the CPU with tiny settings: one table with the solver rows and a
    parity row that compares two solves of the same images (CPU against CPU here)."""
    proc = run_gpu_sh("--device", "cpu", "--batches", "3", "--distinct", "2", "--steps", "5",
                      "--parity", "2", "--torch-batch", "2", "--skip-training")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    solver = [line for line in lines if "solver batch 3" in line]
    assert len(solver) == 1 and "ms/image" in solver[0] and (" torch " in solver[0] or " numba " in solver[0]) and "chunk 3," in solver[0]
    assert any("solver batch 2, torch backend" in line for line in lines)
    parity = [line for line in lines if "parity CPU vs cpu" in line]
    assert len(parity) == 1 and "same initial pose 2/2" in parity[0]
    assert float(parity[0].split()[4]) == 0.0      # the same device: identical poses


def test_gpu_sh_names_a_python_without_torch(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh")], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, NEMOPOSE_PYTHON=str(fake)), timeout=60)
    assert proc.returncode == 2
    assert "cannot import torch" in proc.stderr and "NEMOPOSE_PYTHON" in proc.stderr
