"""Inference end to end on the tiny synthetic PASCAL3D+: feature files in the original's
format, fused == two-stage, per-image results, tables, multi meshes, torchrun sharding."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nemopose import evaluate, inference
from nemopose.train import loop as T
from nemopose.data import annotation, layout
from nemopose.experiment import Experiment
from nemopose.data.datasets import TestDataset
from nemopose.solve.solver import SolverConfig

REPO = Path(__file__).resolve().parents[1]
FAST_SOLVER = SolverConfig(steps=20)


@pytest.fixture(scope="module")
def trained(tiny_dataroot, tmp_path_factory):
    """A tiny light network per mesh type for 'car', trained for one epoch."""
    exproot = tmp_path_factory.mktemp("exp")
    for mesh_d in ("single", "multi"):
        cfg = T.TrainConfig(dataroot=str(tiny_dataroot), exproot=str(exproot), category="car", mesh_d=mesh_d,
                            backbone="light", pretrained="random", light_widths=(8, 16, 32, 32, 64),
                            batch_size=4, total_epochs=1, lr=1e-3, max_group=8, checkpoint_every=0,
                            save_final=True, resume_every=0, workers=0)
        T.train(cfg)
    return tiny_dataroot, exproot


def config(trained, **kw):
    dataroot, exproot = trained
    base = inference.InferenceConfig(dataroot=str(dataroot), exproot=str(exproot), categories=["car"],
                                     device="cpu", solver=FAST_SOLVER, solve_batch=3)
    return replace(base, **kw)


def test_two_stage_writes_the_original_feature_file_and_tables(trained):
    cfg = config(trained)
    table = inference.run(cfg)
    dataset = TestDataset(cfg.dataroot, "car", mesh_d="single", mesh_index=None)
    feat = Experiment(cfg.exproot, "single").feature_file("car")
    with np.load(feat) as f:
        names = list(f["names_mesh01"])
        assert names == dataset.names
        from nemopose import mesh as M
        n_verts = len(M.load_off(layout.cuboid_paths(cfg.dataroot, "single", "car")[0])[0])
        assert f["memory_mesh01"].shape == (n_verts, 128) and f["clutter_mesh01"].shape == (5 * 8, 128)
        assert f[names[0]].shape == (128,) + tuple(s // 8 for s in dataset.image_size)
        np.testing.assert_allclose(np.linalg.norm(f[names[0]], axis=0), 1.0, atol=1e-5)
    out = Experiment(cfg.exproot, "single").accuracy
    rows = evaluate.load_predictions_csv(out / "predictions_L0.csv")
    assert [r["name"] for r in rows] == sorted(dataset.names)
    # the stored error is the rotation error of the stored poses
    for r in rows:
        err = evaluate.rotation_errors_deg({k: [r[k]] for k in ("azimuth", "elevation", "theta")},
                                           {k: [r[f"gt_{k}"]] for k in ("azimuth", "elevation", "theta")})[0]
        assert err == pytest.approx(r["error_deg"], abs=1e-3)
    assert table.mean.n == len(dataset)
    meta = evaluate.read_table_json(out / "accuracy_L0.json")
    assert meta["synthetic"] is True and meta["mean"]["n"] == len(dataset)
    assert "SYNTHETIC" in (out / "accuracy_L0.txt").read_text()
    with np.load(out / "car.npz") as rec:            # the original's CalAccuracy input
        assert rec["total_error"].shape == (len(dataset),)


def test_fused_equals_two_stage_and_occluded_levels(trained):
    for level in ("", "FGL2_BGL2"):
        two = inference.run(config(trained, occ_level=level))
        rows_two = evaluate.load_predictions_csv(Experiment(trained[1], "single").accuracy /
                                                 f"predictions_{level or 'L0'}.csv")
        fused = inference.run(config(trained, occ_level=level, fused=True))
        rows_fused = evaluate.load_predictions_csv(Experiment(trained[1], "single").accuracy /
                                                   f"predictions_{level or 'L0'}.csv")
        assert [r["name"] for r in rows_two] == [r["name"] for r in rows_fused]
        for a, b in zip(rows_two, rows_fused):
            for key in ("azimuth", "elevation", "theta", "distance"):
                assert a[key] == pytest.approx(b[key], abs=1e-4)
        assert two.mean.n == fused.mean.n
    assert Experiment(trained[1], "single").feature_file("car", "FGL2_BGL2").name == \
        "FGL2_BGL2_saved_feature_car_single.npz"


def test_multi_meshes_use_the_annotated_cad_model(trained):
    cfg = config(trained, mesh_d="multi", fused=True)
    inference.run(cfg)
    rows = evaluate.load_predictions_csv(Experiment(cfg.exproot, "multi").accuracy / "predictions_L0.csv")
    lay = layout.split_layout(cfg.dataroot, "val", "car")
    for r in rows:
        assert int(r["mesh"]) == int(annotation.load(lay.annotation_path(r["name"]))["cad_index"])
    best = inference.run(replace(cfg, mesh_selection="best"))
    assert best.mean.n == len(rows)


@pytest.mark.slow
def test_table_accuracy_against_the_annotations(demo_car, tmp_path):
    """The outcome: a car trained with the demo preset (conftest.demo_car), evaluated by the
    pipeline with the paper's solver settings on its 40 val images, gets the poses the
    annotation files hold. Errors are recomputed here from the annotations (not from the
    CSV's gt columns), and the table must report them.

    Measured on the 2-core CPU (SYNTHETIC data): Pi/6 100 %, median error 2.6 degrees. With
    the Adam steps skipped (the 144-pose grid alone): Pi/6 90 %, median 12.1 degrees. One
    constant pose for every image: Pi/6 5 to 25 %, median 70 to 110 degrees (three constants
    tried). Limits: Pi/6 >= 85 %, median <= 6 degrees (2x from both)."""
    from conftest import linked_experiment

    dataroot, exproot = demo_car
    exp = linked_experiment(exproot, tmp_path / "exp")
    cfg = inference.InferenceConfig(dataroot=str(dataroot), exproot=str(exp), categories=["car"], device="cpu",
                                    fused=True)
    table = inference.run(cfg)
    rows = evaluate.load_predictions_csv(Experiment(exp, "single").predictions_csv("L0"))
    lay = layout.split_layout(dataroot, "val", "car")
    assert sorted(r["name"] for r in rows) == sorted(layout.read_list(lay.mesh_list_path("single", 1)))
    angles = ("azimuth", "elevation", "theta")
    truths = [annotation.pose(annotation.load(lay.annotation_path(r["name"]))) for r in rows]
    err = evaluate.rotation_errors_deg({k: [r[k] for r in rows] for k in angles},
                                       {k: [t[k] for t in truths] for k in angles})
    assert np.mean(err < 30) >= 0.85, np.round(err, 1)
    assert np.median(err) <= 6.0, np.round(err, 1)
    # different images get different poses
    assert np.ptp([r["azimuth"] for r in rows]) > 2.0
    # the table and the CSV say what the poses are
    np.testing.assert_allclose([r["error_deg"] for r in rows], err, atol=1e-3)
    assert table.per_category["car"].acc_pi6 == pytest.approx(100 * np.mean(err < 30))
    assert table.per_category["car"].med_err == pytest.approx(np.median(err), abs=1e-3)


def test_missing_checkpoint_is_reported(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CATEGORIES=car \./TrainNeMo\.sh, then .*\./InferenceNeMo\.sh"):
        inference.run(config(trained, exproot=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="epoch 123"):
        inference.run(config(trained, checkpoint="123"))


def test_torchrun_two_ranks_equal_one(trained, tmp_path):
    """Images sharded over 2 gloo ranks: the gathered results equal a 1-process run."""
    dataroot, exproot = trained
    one = inference.run(config(trained, fused=True))
    rows_one = evaluate.load_predictions_csv(Experiment(exproot, "single").accuracy / "predictions_L0.csv")
    out = tmp_path / "exp2"
    (out / "NeMo_single").mkdir(parents=True)
    for f in (Path(exproot) / "NeMo_single").glob("saved_model_car_*.pth"):
        os.link(f, out / "NeMo_single" / f.name)
    env = dict(os.environ, PYTHONPATH=str(REPO / "code"), OMP_NUM_THREADS="1")
    # --standalone: torchrun picks a free port itself (a fixed one clashes with a second suite)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "nemopose.inference", "--dataroot", str(dataroot), "--exproot", str(out), "--categories", "car",
           "--device", "cpu", "--steps", "20", "--solve-batch", "3", "--fused"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows_two = evaluate.load_predictions_csv(out / "Accuracy_single" / "predictions_L0.csv")
    assert [r["name"] for r in rows_two] == [r["name"] for r in rows_one]
    for a, b in zip(rows_one, rows_two):
        assert a["azimuth"] == pytest.approx(b["azimuth"], abs=1e-3)
        assert a["error_deg"] == pytest.approx(b["error_deg"], abs=0.1)
    assert one.mean.n == len(rows_two)


def test_all_categories_means_the_trained_ones(trained, caplog):
    """Only car is trained (aeroplane and chair are prepared too): "all" evaluates car, says
    once which prepared categories have no checkpoint, and writes the table."""
    import logging

    with caplog.at_level(logging.WARNING, logger="nemopose.inference"):
        table = inference.run(config(trained, categories=None, fused=True))
    assert list(table.per_category) == ["car"]
    said = [r.getMessage() for r in caplog.records if "no checkpoint" in r.getMessage()]
    assert len(said) == 1 and "aeroplane, chair" in said[0]
    png = Experiment(trained[1], "single").accuracy_file("L0", "png")
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predicted_distance_is_in_pascal3d_units(trained):
    """The CSV's distance is the solver's render distance converted with the crop's resize
    rate (the render distance is in its own column)."""
    from nemopose import geometry

    table = inference.run(config(trained, fused=True))
    rows = evaluate.load_predictions_csv(Experiment(trained[1], "single").predictions_csv("L0"))
    lay = layout.split_layout(trained[0], "val", "car")
    info = layout.load_dataset_info(lay.root)
    for r in rows:
        anno = annotation.load(lay.annotation_path(r["name"]))
        rate, map_size = annotation.resize_rate(anno), info.feature_map_size("car")
        assert r["distance"] == pytest.approx(float(geometry.pascal_distance(r["render_distance"], rate, map_size)),
                                              rel=1e-5)
    assert table.mean.n == len(rows)


def test_viewpoint_statistics(tiny_dataroot, tmp_path, capsys):
    from nemopose.tools import viewpoints

    v = viewpoints.viewpoints(tiny_dataroot, "train", "car")
    lay = layout.split_layout(tiny_dataroot, "train", "car")
    first = annotation.load(sorted(lay.annotations.glob("*.npz"))[0])
    assert v[0, 0] == pytest.approx(np.degrees(float(first["azimuth"])) % 360)
    assert viewpoints.main(["--dataroot", str(tiny_dataroot), "--categories", "car", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "car_train.png").is_file()
    assert len((tmp_path / "car_train.csv").read_text().splitlines()) == len(v) + 1
    assert "car" in capsys.readouterr().out
