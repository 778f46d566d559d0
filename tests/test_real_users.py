"""The path real users take: the authors' released models downloaded and evaluated, ImageNet
weights fetched and hash-checked, expected mistakes ending in one clean line, the drivers'
yes/no variables."""

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from nemopose import cli, inference, mesh
from nemopose.train import model as M
from nemopose.data import layout
from nemopose.experiment import Experiment
from nemopose.fetch import weights as W
from nemopose.fetch.checkpoints import fetch_authors_checkpoints
from nemopose.solve.neural_mesh import load_trained
from test_download import loopback_server

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def mirror(tmp_path):
    """A loopback HTTP server over a folder (127.0.0.1 only), with Range support."""
    with loopback_server(tmp_path / "mirror") as state:
        yield state


def original_checkpoint(num_vertices: int, seed: int = 0) -> tuple[dict, M.NeMoNet]:
    """A checkpoint in the authors' format (DataParallel key names, a memory list, an
    argparse Namespace) of a random resnetext network, and that network."""
    torch.manual_seed(seed)
    net = M.NeMoNet("resnetext", pretrained="random").eval()
    with torch.no_grad():   # non-trivial BN statistics, so a wrong key mapping would show
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    memory = torch.nn.functional.normalize(torch.randn(num_vertices + 2560, 128), dim=1)
    ckpt = {"state": M.to_original_state_dict(net.state_dict()), "memory": [memory], "timestamp": 0,
            "args": argparse.Namespace(type_="car", mesh_d="single", d_feature=128)}
    return ckpt, net


def test_authors_checkpoints_from_a_mirror_are_evaluated_with_the_papers_numbers(tiny_dataroot, tmp_path, mirror,
                                                                                    capsys):
    n_verts = len(mesh.load_off(layout.cuboid_paths(tiny_dataroot, "single", "car")[0])[0])
    ckpt, net = original_checkpoint(n_verts)
    torch.save(ckpt, tmp_path / "saved_model_car_799.pth")
    with zipfile.ZipFile(mirror.root / "NeMo_Single_799.zip", "w") as zf:       # the file at some depth
        zf.write(tmp_path / "saved_model_car_799.pth", "NeMo_Single_799/models/saved_model_car_799.pth")
    (tmp_path / "saved_model_car_799.pth").unlink()
    exproot = tmp_path / "exp"
    argv = ["--dataroot", str(tiny_dataroot), "--exproot", str(exproot), "--checkpoint", "authors",
            "--download-mirror", mirror.url, "--device", "cpu", "--steps", "5", "--fused"]
    assert cli.run(inference.main, argv) == 0
    out = capsys.readouterr().out
    exp = Experiment(exproot, "single")
    # downloaded once, unpacked into NeMo_single/, archive removed
    assert exp.authors_checkpoints() == {"car": exp.checkpoints / "saved_model_car_799.pth"}
    assert not (exproot / "NeMo_Single_799.zip").exists()
    # the table: our row and the authors' reported car numbers under it (categories = the trained ones)
    lines = out.splitlines()
    pi6 = next(i for i, line in enumerate(lines) if line.startswith("Pi/6"))
    assert lines[pi6 + 1].split() == ["paper", "98.5", "85.5"]
    assert "SYNTHETIC" in out
    rows = (exp.accuracy / "predictions_L0.csv").read_text().splitlines()
    assert len(rows) - 1 == len(layout.read_list(layout.split_layout(tiny_dataroot, "val", "car")
                                                 .mesh_list_path("single", 1)))
    # the evaluated network is the authors': same test-time features as the one saved
    loaded, meshes, info = load_trained(exp.resolve_checkpoint("car", "authors"),
                                        layout.cuboid_paths(tiny_dataroot, "single", "car"))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
    assert info["original"] and meshes[0].vertex_features.shape == (n_verts, 128)
    # a second run does not download again (the mirror saw one request)
    assert sum("NeMo_Single_799.zip" in path for path, _ in mirror.requests) == 1
    assert fetch_authors_checkpoints(exp, mirror=mirror.url) == exp.authors_checkpoints()
    assert sum("NeMo_Single_799.zip" in path for path, _ in mirror.requests) == 1


def test_imagenet_weights_are_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    mirror = tmp_path / "weights"
    mirror.mkdir()
    torch.save({"conv1.weight": torch.zeros(1)}, mirror / W.RESNET50_IMAGENET_FILE)   # not the real file
    with pytest.raises(W.PretrainedWeightsMissing, match="--pretrained random"):
        W.fetch_imagenet_weights(mirror=mirror.as_uri(), progress=False)
    assert not W.imagenet_weights_path().exists()                       # nothing left in the cache
    with pytest.raises(W.PretrainedWeightsMissing, match="downloading is off"):
        W.fetch_imagenet_weights(download="no")


def _last_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_expected_mistakes_end_in_one_line(tmp_path, capsys):
    from nemopose import predict
    from nemopose.train import loop as train

    none = str(tmp_path / "none")
    (tmp_path / "bad.jpg").write_text("not a jpeg")
    cases = [
        (train.main, ["--dataroot", none, "--exproot", none, "--categories", "car", "--device", "cpu"],
         "car: no prepared training data"),
        (train.main, ["--dataroot", none, "--categories", "all", "--device", "cpu"], "no prepared training data"),
        (train.main, ["--dataroot", none, "--categories", "spaceship", "--device", "cpu"], "unknown category 'spaceship'"),
        (inference.main, ["--dataroot", none, "--exproot", none, "--categories", "car", "--device", "cpu"],
         "CATEGORIES=car ./PrepareData.sh, then"),
        (predict.main, ["--category", "car", "--images", str(tmp_path / "missing.jpg")], "missing.jpg: image file does not"),
        (predict.main, ["--category", "car", "--images", str(tmp_path / "bad.jpg")], "bad.jpg: cannot decode image"),
    ]
    for main, argv, says in cases:
        assert cli.run(main, argv) == 2, argv
        last = _last_error(capsys)
        assert last.startswith("error: ") and says in last, last


def test_driver_yes_no_variables_accept_true_false(tmp_path):
    (layout.release_root(tmp_path) / "Images").mkdir(parents=True)        # a "real" release: SYNTHETIC=yes refuses
    env = {"PATH": "/usr/bin:/bin", "NEMOPOSE_PYTHON": sys.executable, "DATAROOT": str(tmp_path),
           "SYNTHETIC": "yes", "CATEGORIES": "car"}
    run = lambda **kw: subprocess.run(["bash", str(REPO / "PrepareData.sh")], env={**env, **kw},  # noqa: E731
                                      capture_output=True, text=True)
    for value in ("false", "True"):
        out = run(ENABLE_OCCLUDED=value)            # accepted: Python runs and refuses the source
        assert out.returncode == 2 and "SYNTHETIC=yes but a real PASCAL3D+" in out.stderr, out.stderr
    out = run(ENABLE_OCCLUDED="maybe")
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].endswith(
        "error: argument --occluded: must be yes or no (or true/false), got 'maybe'")   # ENABLE_OCCLUDED
    out = run(SYNTHETIC="False", DOWNLOAD="no")     # the original's false: the real data, here not downloadable
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 2 and last.startswith("error: ") and "downloading is disabled" in last, out.stderr
    assert "Image_subsets.zip" in out.stderr and "Traceback" not in out.stderr
