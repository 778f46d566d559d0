"""Training on the real preparation output (tiny synthetic PASCAL3D+): multi-mesh banks,
checkpoint, feature extraction inputs, occluded test sets."""

import pytest
import torch

from nemopose.train import checkpoint, loop as T
from nemopose.tools import feature_quality
from nemopose.experiment import Experiment
from nemopose.data import layout, prepare
from nemopose.data.datasets import TestDataset


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    assert prepare.main(["--dataroot", str(root), "--categories", "car", "--mesh-dimensions", "single multi",
                         "--synthetic", "yes", "--synthetic-size", "tiny", "--no-progress",
                         "--azimuth-bins", "TTTTFFFF"]) == 0
    return root


def test_multi_mesh_training_on_prepared_data(tiny_root, tmp_path):
    cfg = T.TrainConfig(dataroot=str(tiny_root), exproot=str(tmp_path), category="car", mesh_d="multi",
                        backbone="light", pretrained="random", light_widths=(8, 16, 32, 32, 64), batch_size=2,
                        total_epochs=2, lr=1e-3, max_group=8, checkpoint_every=0, save_final=True,
                        resume_every=0, workers=0, precise_bn=True)
    out = T.train(cfg)
    meshes = layout.cuboid_paths(tiny_root, "multi", "car")
    assert len(meshes) >= 2
    record = out["history"][-1]
    assert set(record["mesh_loss"]) == {f"mesh{i:02d}" for i in range(1, len(meshes) + 1)
                                        if layout.read_list(layout.split_layout(tiny_root, "train", "car")
                                                            .mesh_list_path("multi", i))}
    ckpt = checkpoint.load_checkpoint(Experiment(tmp_path, "multi").final_checkpoint("car"))
    assert len(ckpt["memory"]) == len(meshes) and ckpt["args"].mesh_d == "multi"
    net, memories, _ = checkpoint.load_network(ckpt)
    for m, n in zip(memories, ckpt["num_vertices"]):
        assert m.shape == (n + 5 * 8, 128)
        torch.testing.assert_close(m.norm(dim=1), torch.ones(len(m)))
    for level in ("", "FGL1_BGL1"):
        ds = TestDataset(tiny_root, "car", split="val", occ_level=level, mesh_d="multi", mesh_index=None,
                         with_vertices=True)
        item = ds[0]
        assert item["mesh_index"] >= 1 and item["cad_index"] >= 1
        with torch.no_grad():
            fmap = net(item["image"][None])
        assert fmap.shape == (1, 128) + tuple(s // 8 for s in item["image"].shape[1:])
    scores = feature_quality.evaluate_category(tiny_root, tmp_path, "car", mesh_d="multi")
    assert scores["images"] == len(TestDataset(tiny_root, "car", mesh_d="multi", mesh_index=None))


def test_unseen_pose_lists(tiny_root, tmp_path):
    """--azimuth-bins trains on lists3D_<mesh_d>_azum_<mask> and saves to NeMo_<mesh_d>_azum_<mask>."""
    lay = layout.split_layout(tiny_root, "train", "car")
    unseen = layout.read_list(lay.lists3d_azimuth_bins("single", "TTTTFFFF") / "mesh01.txt")
    full = layout.read_list(lay.mesh_list_path("single", 1))
    assert set(unseen) < set(full) and unseen     # the mask keeps some images, not all
    cfg = T.TrainConfig(dataroot=str(tiny_root), exproot=str(tmp_path), category="car", azimuth_bins="TTTTFFFF",
                        backbone="light", pretrained="random", light_widths=(8, 16, 32, 32, 64), batch_size=2,
                        total_epochs=1, max_group=8, checkpoint_every=0, save_final=True, resume_every=0, workers=0)
    out = T.train(cfg)
    assert out["history"][0]["images"] == len(unseen)
    assert out["checkpoint"].parent.name == "NeMo_single_azum_TTTTFFFF"
