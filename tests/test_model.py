"""The network: shapes, normalisation, vertex/clutter gathering, pretrained weights, original
checkpoints."""

import argparse

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings, strategies as st

from nemopose.train import checkpoint, model as M
from nemopose import experiment


@pytest.fixture(scope="module")
def resnetext():
    torch.manual_seed(0)
    return M.NeMoNet("resnetext", pretrained="random").eval()


def _check_train_features_match_map(net, images, generator):
    b, _, h, w = images.shape
    nv = 7
    rows = torch.randint(0, h, (b, nv, 1), generator=generator)
    cols = torch.randint(0, w, (b, nv, 1), generator=generator)
    pixels = torch.cat([rows, cols], dim=2).float()
    vidx = M.vertex_cell_index(pixels, (h, w))
    cidx = M.sample_clutter_index(vidx, (h // 8) * (w // 8), 5, generator=generator)
    with torch.no_grad():
        feats = net(images, vidx, cidx)
        net.test_head_bias = True
        fmap = net(images)
        net.test_head_bias = False
        fmap_nobias = net(images)
    assert feats.shape == (b, nv + 5, 128)
    torch.testing.assert_close(feats.norm(dim=2), torch.ones(b, nv + 5))
    assert fmap_nobias.shape == (b, 128, h // 8, w // 8)
    torch.testing.assert_close(fmap_nobias.norm(dim=1), torch.ones(b, h // 8, w // 8))
    # Training features are the map (with the head's bias) at the vertex / clutter cells.
    flat = fmap.flatten(2).transpose(1, 2)
    index = torch.cat([vidx, cidx], dim=1)
    torch.testing.assert_close(feats, torch.gather(flat, 1, index.unsqueeze(-1).expand(-1, -1, 128)),
                               atol=1e-5, rtol=1e-4)
    # The test-time quirk (no bias) gives a different map.
    assert not torch.allclose(fmap, fmap_nobias, atol=1e-3)


def test_resnetext_shapes_normalisation_and_gather(resnetext):
    gen = torch.Generator().manual_seed(0)
    _check_train_features_match_map(resnetext, torch.randn(2, 3, 64, 96, generator=gen), gen)


def test_light_backbone_same_contract():
    torch.manual_seed(0)
    net = M.NeMoNet("light", pretrained="random").eval()
    gen = torch.Generator().manual_seed(1)
    _check_train_features_match_map(net, torch.randn(3, 3, 128, 336, generator=gen), gen)
    gnet = M.NeMoNet("light", pretrained="random", light_norm="group").eval()
    assert gnet(torch.randn(1, 3, 64, 168)).shape == (1, 128, 8, 21)
    with pytest.raises(ValueError, match="no pretrained weights"):
        M.NeMoNet("light", pretrained="imagenet")
    with pytest.raises(ValueError, match="unknown backbone"):
        M.NeMoNet("vgg", pretrained="random")


def test_sizes_not_multiple_of_32(resnetext):
    """Demo crops (e.g. 128 x 336) are multiples of 8 only: Up crops instead of padding."""
    with torch.no_grad():
        assert resnetext(torch.randn(1, 3, 40, 72)).shape == (1, 128, 5, 9)


def test_vertex_cell_index_formula():
    pixels = torch.tensor([[[0, 0], [7, 7], [8, 0], [15, 23.9], [63, 167]]], dtype=torch.float32)
    idx = M.vertex_cell_index(pixels, (64, 168))
    assert idx.tolist() == [[0, 0, 21, 21 + 2, 7 * 21 + 20]]
    with pytest.raises(ValueError):
        M.vertex_cell_index(torch.zeros(2, 3), (64, 168))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 60), st.integers(0, 2 ** 31))
def test_clutter_cells_avoid_vertices(batch, nv, seed):
    gen = torch.Generator().manual_seed(seed)
    cells = 8 * 12
    vidx = torch.randint(0, cells, (batch, nv), generator=gen)
    cidx = M.sample_clutter_index(vidx, cells, 5, generator=gen)
    assert cidx.shape == (batch, 5)
    for b in range(batch):
        chosen = set(cidx[b].tolist())
        assert len(chosen) == 5                                    # without replacement
        assert not chosen & set(vidx[b].tolist())                   # never a vertex cell
        assert all(0 <= c < cells for c in chosen)
    seeds = [seed + b for b in range(batch)]
    a = M.sample_clutter_index(vidx, cells, 5, seeds=seeds)
    assert torch.equal(a, M.sample_clutter_index(vidx, cells, 5, seeds=seeds))   # keyed = reproducible
    # a sample's cells depend on its seed only, not on its batch
    assert torch.equal(a[-1:], M.sample_clutter_index(vidx[-1:], cells, 5, seeds=seeds[-1:]))


def test_clutter_sampling_is_uniform_over_free_cells():
    vidx = torch.tensor([[0, 1, 2, 3]])
    counts = torch.zeros(10)
    gen = torch.Generator().manual_seed(0)
    for _ in range(400):
        counts[M.sample_clutter_index(vidx, 10, 3, generator=gen)[0]] += 1
    assert counts[:4].sum() == 0
    assert counts[4:].min() > 150 and counts[4:].max() < 250       # 200 expected per free cell
    with pytest.raises(ValueError, match="free of vertices"):
        M.sample_clutter_index(torch.arange(8)[None], 10, 3)


def test_pretrained_weights_missing_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(M.PretrainedWeightsMissing, match="--pretrained random"):
        M.NeMoNet("resnetext", pretrained="imagenet")


def test_pretrained_weights_from_file(tmp_path):
    torch.manual_seed(5)
    resnet = torchvision.models.resnet50(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "r50.pth")
    net = M.NeMoNet("resnetext", pretrained=str(tmp_path / "r50.pth"))
    torch.testing.assert_close(net.backbone.stride8[0].weight, resnet.conv1.weight)
    torch.testing.assert_close(net.backbone.layer4[2].conv3.weight, resnet.layer4[2].conv3.weight)
    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a ResNet-50"):
        M.NeMoNet("resnetext", pretrained=str(tmp_path / "bad.pth"))


def test_original_checkpoint_loads_with_same_features(resnetext, tmp_path):
    """A checkpoint in the authors' format (DataParallel names, memory list, Namespace args)
    built from our weights loads and gives the same test-time features."""
    with torch.no_grad():   # give BN non-trivial statistics so a wrong mapping would show
        for mod in resnetext.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    state = M.to_original_state_dict(resnetext.state_dict())
    assert len(state) == 362
    for key in ("module.net.extractor.0.weight", "module.net.extractor.5.3.conv3.weight",
                "module.net.extractor1.5.bn3.running_var", "module.net.extractor2.0.downsample.0.weight",
                "module.net.upsample0.doubleconv.4.running_mean", "module.net.upsample1.doubleconv.doubleconv.0.bias",
                "module.net.upsample2.doubleconv.doubleconv.3.weight", "module.out_layer.weight", "module.out_layer.bias"):
        assert key in state, key
    memory = [F.normalize(torch.randn(1000 + 2560, 128), dim=1)]
    args = argparse.Namespace(type_="car", d_feature=128, local_size=[1, 1], mesh_d="single")
    torch.save({"state": state, "memory": memory, "timestamp": 1600000000, "args": args},
               tmp_path / "3D512_points1saved_model_car_799.pth")
    assert experiment.list_checkpoints(tmp_path, "car")[-1][1].name == "3D512_points1saved_model_car_799.pth"
    loaded, memories, info = checkpoint.load_network(tmp_path / "3D512_points1saved_model_car_799.pth")
    assert info["original"] and info["backbone"] == "resnetext" and info["category"] == "car"
    torch.testing.assert_close(memories[0], memory[0])
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), resnetext.eval()(images))
    bad = dict(state)
    bad["module.net.mystery.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="mystery"):
        M.from_original_state_dict(bad)


def test_precise_batchnorm_matches_training_statistics():
    """After re-estimating BN statistics on a batch, eval-mode features of that batch match
    the training-mode (batch statistics) ones up to the unbiased-variance factor n/(n-1);
    with the initial statistics they are far off."""
    torch.manual_seed(0)
    net = M.NeMoNet("light", pretrained="random", light_widths=(8, 16, 32, 32, 64))
    images = torch.randn(8, 3, 128, 192) * 2 + 1
    with torch.no_grad():
        train_out = net.train()(images)
        before = float((net.eval()(images) - train_out).abs().max())
        assert M.recalibrate_batchnorm(net, [images]) == 14
        assert not net.training
        after = float((net(images) - train_out).abs().max())
    assert before > 0.1 and after < 0.02 and after < before / 10, (before, after)
    assert all(m.momentum == 0.1 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_bf16_autocast_runs_the_backbone_in_bf16_and_the_head_in_fp32():
    """Under the bf16 training context the backbone computes in bfloat16, but the features
    leave the network as float32 unit vectors close to the fp32 ones; weights stay float32."""
    from nemopose.train.precision import network_autocast
    torch.manual_seed(0)
    net = M.NeMoNet("light", pretrained="random", light_widths=(8, 16, 32, 32, 64)).eval()
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(2, 3, 64, 168, generator=gen)
    vidx = torch.randint(0, 8 * 21, (2, 9), generator=gen)
    cidx = M.sample_clutter_index(vidx, 8 * 21, 5, generator=gen)
    cpu = torch.device("cpu")
    with torch.no_grad():
        reference = net(images, vidx, cidx)
        with network_autocast("bf16", cpu):
            assert net.backbone(images).dtype == torch.bfloat16
            feats, fmap = net(images, vidx, cidx), net(images)
        with network_autocast("fp32", cpu):
            assert net.backbone(images).dtype == torch.float32
    assert feats.dtype == fmap.dtype == torch.float32
    torch.testing.assert_close(feats.norm(dim=2), torch.ones(2, 14))     # normalised in fp32: exact
    torch.testing.assert_close(fmap.norm(dim=1), torch.ones(2, 8, 21))
    cosine = (feats * reference).sum(-1)
    assert float(cosine.min()) > 0.99 and not torch.equal(feats, reference)   # bf16 rounding, small
    assert all(p.dtype == torch.float32 for p in net.parameters())
