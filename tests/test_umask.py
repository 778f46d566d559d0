"""Results are shareable: everything the tools write (atomic writes included, which go through
``mkstemp``'s private 0600 files) gets the modes the user's umask gives any new file: 0644
files and 0755 folders under umask 022, 0640 / 0750 under 027."""

import os
import stat

import numpy as np
import pytest
import torch

from nemopose import utils
from nemopose.data import annotation
from nemopose.tools import plots


@pytest.fixture
def umask():
    """Set the umask for one test and restore the previous one after it."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750),
                                                       (0o077, 0o600, 0o700)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    written = {
        "text": lambda p: utils.atomic_write_text(p, "x\n"),
        "json": lambda p: utils.atomic_write_json(p, {"a": 1}),
        "npz": lambda p: utils.atomic_savez(p, a=np.zeros(3)),
        "pth": lambda p: utils.atomic_torch_save({"w": torch.zeros(2)}, p),
        "anno.npz": lambda p: annotation.save(p, azimuth=np.float64(0.5)),
        "png": lambda p: plots.plot_levels(p, {"": np.array([1.0, 20.0])}, "t"),
        "jsonl": lambda p: utils.append_jsonl(p, {"epoch": 1}),
    }
    for i, (name, write) in enumerate(written.items()):
        path = tmp_path / f"sub{i}" / "deeper" / f"out.{name}"
        write(path)
        assert path.is_file(), name
        assert mode(path) == file_mode, (name, oct(mode(path)))
        assert mode(path.parent) == dir_mode and mode(path.parent.parent) == dir_mode, name
    leftovers = [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert not leftovers                                   # no temporary file left behind


def test_the_umask_is_read_without_changing_it(umask, monkeypatch):
    umask(0o027)
    assert utils.current_umask() == 0o027 and utils.default_file_mode() == 0o640
    # without /proc (other systems): the fall-back gives the same answer and restores the mask
    real_open = open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise OSError("no /proc here")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_proc)
    assert utils.current_umask() == 0o027
    monkeypatch.undo()
    assert utils.current_umask() == 0o027
    assert os.umask(0o027) == 0o027                        # what the process still has
