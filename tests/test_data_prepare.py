"""The whole preparation on the tiny synthetic PASCAL3D+ (METHOD.md §6, §13, §14)."""

import json
import math
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from conftest import REPO, TINY_CATEGORIES
from nemopose import constants, geometry, mesh
from nemopose.render import raster as render
from nemopose.data import annotation, crop, layout, mat_record, pascal3d, prepare, stages, synthetic, synthetic_cad

SCALE = 0.5  # the synthetic default


def _release(root):
    return pascal3d.Pascal3DRelease(layout.release_root(root))


def _annos(root, split, cat, level="", mesh_d=None):
    lay = layout.split_layout(root, split, cat, level)
    folder = lay.annotations3d(mesh_d) if mesh_d else lay.annotations
    return [(p.stem, annotation.load(p, require_3d=bool(mesh_d))) for p in sorted(folder.glob("*.npz"))]


def spec3_project(points, anno):
    """METHOD.md §3 written out in NumPy, independently of nemopose.geometry: (N, 2) x, y."""
    a, e, t = float(anno["azimuth"]), float(anno["elevation"]), float(anno["theta"])
    d = float(anno["distance"]) or 0.1
    C = d * np.array([math.cos(e) * math.sin(a), -math.cos(e) * math.cos(a), math.sin(e)])
    az, el = -a, -(math.pi / 2 - e)
    Rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    Rx = np.array([[1, 0, 0], [0, math.cos(el), -math.sin(el)], [0, math.sin(el), math.cos(el)]])
    xc = (np.asarray(points, np.float64) - C) @ (Rx @ Rz).T
    M = float(anno["viewport"]) * float(anno["focal"])
    u, v = M * xc[:, 0] / -xc[:, 2], M * xc[:, 1] / -xc[:, 2]
    u, v = math.cos(t) * u - math.sin(t) * v, math.sin(t) * u + math.cos(t) * v
    px, py = anno["principal"]
    return np.stack([u + px, -v + py], 1)


def test_layout_and_provenance(tiny_dataroot):
    root = tiny_dataroot
    assert layout.is_synthetic(layout.release_root(root)) and layout.is_synthetic(layout.occluded_root(root))
    for split_dir in layout.SPLIT_DIRS.values():
        info = layout.load_dataset_info(root / split_dir)
        assert info.synthetic and info.image_scale == SCALE
    summary = json.loads((root / prepare.SUMMARY_FILE).read_text())
    assert summary["synthetic"] and summary["skipped"] == []
    release = _release(root)
    for cat in TINY_CATEGORIES:
        n_cad = len(release.cad_model_paths(cat))
        assert [p.name for p in layout.cuboid_paths(root, "multi", cat)] == [f"{i:02d}.off" for i in range(1, n_cad + 1)]
        assert [p.name for p in layout.cuboid_paths(root, "single", cat)] == ["01.off"]
        for split in ("train", "val"):
            lay = layout.split_layout(root, split, cat)
            names = release.image_set(cat, split)
            assert sorted(p.stem for p in lay.images.glob("*.JPEG")) == sorted(names)
            annos = dict(_annos(root, split, cat))
            assert sorted(annos) == sorted(names)
            # Lists: per subtype and per CAD model, each image in exactly one of each.
            by_subtype = [layout.read_list(lay.lists / f"{s}.txt") for s in constants.SUBTYPE_NAMES[cat]]
            by_mesh = {i: layout.read_list(lay.lists / f"mesh{i:02d}.txt") for i in range(1, n_cad + 1)}
            assert sorted(sum(by_subtype, [])) == sorted(names)
            assert sorted(sum(by_mesh.values(), [])) == sorted(names)
            for i, group in by_mesh.items():
                assert all(int(annos[n]["cad_index"]) == i for n in group)
            assert sorted(layout.read_list(lay.mesh_list_path("single", 1))) == sorted(names)
            for i, group in by_mesh.items():
                assert layout.read_list(lay.mesh_list_path("multi", i)) == group
            for name, anno in annos.items():
                assert set(annotation.REQUIRED_KEYS) | {"padding", "resize_rate"} <= set(anno)
                assert anno["box_obj"][4:].tolist() == list(constants.image_size(cat, SCALE))
                assert float(anno["resize_rate"]) == pytest.approx(SCALE * float(anno["distance"]) / 5)


def test_crops_equal_the_original_images_cropped(tiny_dataroot):
    from PIL import Image

    release = _release(tiny_dataroot)
    for cat in TINY_CATEGORIES:
        lay = layout.split_layout(tiny_dataroot, "train", cat)
        for name, anno in _annos(tiny_dataroot, "train", cat)[:2]:
            original = pascal3d.load_image_array(release.image_path(cat, name))
            geom = crop.CropGeometry(float(anno["resize_rate"]), (int(original.shape[0] * anno["resize_rate"]),
                                     int(original.shape[1] * anno["resize_rate"])), anno["padding"], anno["box"],
                                     anno["box_ori"], anno["box_obj"])
            expected = crop.apply_crop(original, geom).astype(float)
            saved = np.asarray(Image.open(lay.image_path(name))).astype(float)
            err = np.abs(saved - expected).mean()
            shifted = np.abs(saved[:, 2:] - expected[:, :-2]).mean()
            assert err < 4 and err < 0.5 * shifted, (name, err, shifted)   # JPEG error only


def _render_camera(cat):
    h, w = constants.image_size(cat, SCALE)
    return render.RenderCamera((h // 8, w // 8), render_size=max(h, w) // 8)


def test_3d_annotations_agree_with_the_renderer(tiny_dataroot):
    """The key consistency check: vertex pixels / 8 in the crop land where the pose solver's
    render camera projects the mesh at the annotated angles and the distance of
    crop.render_distance_for_crop (within a feature-map cell)."""
    errors = []
    for cat in TINY_CATEGORIES:
        verts, _ = mesh.load_off(layout.cuboid_paths(tiny_dataroot, "single", cat)[0])
        camera = _render_camera(cat)
        d_r = crop.render_distance_for_crop(constants.image_size(cat, SCALE), SCALE)
        for split in ("train", "val"):
            for name, anno in _annos(tiny_dataroot, split, cat, mesh_d="single"):
                center = geometry.camera_center(torch.tensor([float(anno["azimuth"])], dtype=torch.float64),
                                                torch.tensor([float(anno["elevation"])], dtype=torch.float64),
                                                torch.tensor([d_r], dtype=torch.float64))
                screen = render.project_vertices(torch.from_numpy(verts).double(), center,
                                                 torch.tensor([float(anno["theta"])], dtype=torch.float64), camera)
                proj = screen[0, :, :2].numpy()                              # (V, 2) col, row in cells
                cells = anno["cropped_kp_list"][:, ::-1] / 8                 # (V, 2) col, row
                vis = anno["visible"]
                h, w = anno["box_obj"][4:]
                inner = (anno["cropped_kp_list"] > 0).all(1) & (anno["cropped_kp_list"] < [h - 1, w - 1]).all(1)
                err = np.linalg.norm(proj - cells, axis=1)[vis & inner]
                assert len(err) > 50, name
                errors.append(err)
    errors = np.concatenate(errors)
    assert errors.max() < 1.0 and errors.mean() < 0.4, (errors.max(), errors.mean())


def test_3d_annotations_agree_with_an_independent_projection(tiny_dataroot):
    for cat in TINY_CATEGORIES:
        for mesh_d in ("single", "multi"):
            for name, anno in _annos(tiny_dataroot, "val", cat, mesh_d=mesh_d):
                index = int(anno["cad_index"])
                verts, _ = mesh.load_off(layout.cuboid_dir(tiny_dataroot, mesh_d, cat) / f"{index:02d}.off")
                xy = spec3_project(verts.astype(np.float64), anno)
                # exact: truncated pixels through the box map, clamped into the crop
                exact = crop.map_to_crop(np.trunc(xy[:, ::-1]), anno["box_ori"], anno["box_obj"])
                exact = np.clip(exact, 0, anno["box_obj"][4:] - 1)
                np.testing.assert_allclose(anno["cropped_kp_list"], exact, atol=1e-6)
                # about a pixel: the unrounded projection scaled by r and moved by the window
                r = float(anno["resize_rate"])
                direct = xy[:, ::-1] * r + anno["padding"][:2, 0] - anno["box"][[0, 2]]
                vis = anno["visible"]
                assert np.abs(direct - anno["cropped_kp_list"])[vis].max() < r + 1.5
                if mesh_d == "single":
                    assert index == 1


def test_keypoints_land_on_the_anchors(tiny_dataroot):
    release = _release(tiny_dataroot)
    for cat in TINY_CATEGORIES:
        anchors = synthetic_cad.load_cad_anchors(release.root / "CAD" / f"{cat}.mat", cat)
        n_visible = 0
        for name, anno in _annos(tiny_dataroot, "train", cat):
            xy = spec3_project(anchors[int(anno["cad_index"]) - 1], anno)
            expected = crop.map_to_crop(xy[:, ::-1], anno["box_ori"], anno["box_obj"])
            vis = anno["visible"] == 1
            np.testing.assert_allclose(anno["cropped_kp_list"][vis], expected[vis], atol=1e-6)
            assert (anno["cropped_kp_list"][~vis] == 0).all()
            n_visible += vis.sum()
        assert n_visible > 0


def test_occluded_sets(tiny_dataroot):
    occ = pascal3d.OccludedRelease(layout.occluded_root(tiny_dataroot))
    tiny = synthetic.preset("tiny")
    for cat in TINY_CATEGORIES:
        models = synthetic.cad_models(cat, tiny)
        with prepare.torch_threads(1):
            masks = {name: synthetic.generate_image(cat, "val", int(name[-4:]), models, tiny)[2].mask
                     for name in _release(tiny_dataroot).image_set(cat, "val")}
        val = dict(_annos(tiny_dataroot, "val", cat))
        val3d = layout.split_layout(tiny_dataroot, "val", cat).annotations3d("single")
        for level in constants.OCCLUSION_LEVELS:
            lo, hi = constants.OCCLUSION_FG_RANGES[level]
            lay = layout.split_layout(tiny_dataroot, "val", cat, level)
            annos = dict(_annos(tiny_dataroot, "val", cat, level))
            assert sorted(annos) == sorted(val)
            for name, anno in annos.items():
                mask = pascal3d.load_occluder_mask(occ.mask_path(cat, level, name))
                np.testing.assert_array_equal(anno["occ_mask"], mask)
                for key in ("box", "box_obj", "cropped_kp_list", "azimuth"):
                    np.testing.assert_array_equal(anno[key], val[name][key])
                rec = mat_record.load_record(_release(tiny_dataroot).annotation_path(cat, name), cat)
                x, y = rec.keypoint_xy.T
                under = np.zeros(len(x), bool)
                ok = rec.keypoint_status == 1
                under[ok] = mask[y[ok].astype(int), x[ok].astype(int)]
                assert (anno["visible"][under] == 0).all()
                np.testing.assert_array_equal(anno["visible"][~under], val[name]["visible"][~under])
                # The occluder covers the level's fraction of the object.
                frac = (mask & masks[name]).sum() / masks[name].sum()
                assert lo - 0.03 <= frac <= hi + 0.03, (name, level, frac)
            # 3D annotations are the val ones (same files), with the level's own lists3D.
            for p in lay.annotations3d("single").glob("*.npz"):
                assert p.read_bytes() == (val3d / p.name).read_bytes()
            assert sorted(layout.read_list(lay.mesh_list_path("single", 1))) == sorted(annos)


def test_unseen_pose_lists(tiny_dataroot, tmp_path):
    lay = layout.split_layout(tiny_dataroot, "train", "car")
    config = prepare.PrepareConfig(azimuth_bins="TTTTFFFF", progress=False)
    # write the filtered lists into a scratch copy of the lists3D folder
    import shutil

    scratch = tmp_path / "train"
    shutil.copytree(lay.root, scratch)
    copy = layout.SplitLayout(scratch, "car")
    stages.write_azimuth_lists(copy, "single", config)
    kept = layout.read_list(copy.lists3d_azimuth_bins("single", "TTTTFFFF") / "mesh01.txt")
    for name in layout.read_list(copy.mesh_list_path("single", 1)):
        az = float(np.load(copy.annotation_path(name))["azimuth"])
        assert (name in kept) == (0 < az < math.pi)


def _corrupt(root, cat):
    """One bad input of each kind in the (generated, unprepared) synthetic release."""
    release = _release(root)
    names = release.image_set(cat, "train")
    release.image_path(cat, names[0]).write_bytes(release.image_path(cat, names[0]).read_bytes()[:500])
    rec = scipy.io.loadmat(release.annotation_path(cat, names[1]))["record"]
    objects = rec["objects"][0, 0]
    keep = [n for n in objects.dtype.names if n != "viewpoint"]
    stripped = np.zeros((1, 1), dtype=[(n, "O") for n in keep])
    for n in keep:
        stripped[0, 0][n] = objects[0, 0][n]
    scipy.io.savemat(release.annotation_path(cat, names[1]),
                     {"record": {"imgsize": rec["imgsize"][0, 0], "objects": stripped}})
    rec = scipy.io.loadmat(release.annotation_path(cat, names[2]))["record"]
    rec["objects"][0, 0]["viewpoint"][0, 0]["distance"][0, 0][0, 0] = 0.0
    scipy.io.savemat(release.annotation_path(cat, names[2]), {"record": rec})
    (release.cad_dir(cat) / "02.off").write_text("OFF\n8 12 0\n0 0 0\n")
    return names


def test_bad_inputs_idempotency_and_overwrite(tmp_path):
    root = tmp_path / "data"
    syn = synthetic.preset("tiny", 0, occluded=False)
    synthetic.generate(root, ["car"], syn, progress=False)
    names = _corrupt(root, "car")
    config = prepare.PrepareConfig(progress=False, occluded=False, synthetic="yes", synthetic_size="tiny", seed=0)

    report = prepare.run(root, ["car"], config)
    reasons = {Path(s["file"]).name: s["reason"] for s in report.skipped}
    assert "cannot decode image" in reasons[f"{names[0]}.JPEG"]
    assert "missing or malformed field 'objects.viewpoint'" in reasons[f"{names[1]}.mat"]
    assert "zero distance" in reasons[f"{names[2]}.JPEG"]
    assert "02.off: header announces 8 vertices" in reasons["02.off"]
    lay = layout.split_layout(root, "train", "car")
    prepared = sorted(p.stem for p in lay.images.glob("*.JPEG"))
    assert prepared == sorted(names[3:])
    assert report.total("car", "train") == len(names) - 3
    # Images of CAD model 02 have no multi cuboid: reported, the others annotated.
    cad2 = [n for n in prepared if int(np.load(lay.annotation_path(n))["cad_index"]) == 2]
    multi = {p.stem for p in lay.annotations3d("multi").glob("*.npz")}
    assert multi == set(prepared) - set(cad2)
    assert sum("no cuboid mesh 02" in s["reason"] for s in report.skipped) == len(cad2) + sum(
        int(np.load(p)["cad_index"]) == 2 for p in layout.split_layout(root, "val", "car").annotations.glob("*.npz"))
    summary = json.loads((root / prepare.SUMMARY_FILE).read_text())
    assert len(summary["skipped"]) == len(report.skipped)
    assert {s["file"] for s in summary["skipped"]} == {s["file"] for s in report.skipped}

    # Second run: nothing to do.
    stamp = {p: p.stat().st_mtime_ns for p in lay.root.rglob("*") if p.is_file()}
    again = prepare.run(root, ["car"], config)
    assert all(c["prepared"] == 0 for c in again.counts.values())
    assert again.total("car", "train") == len(names) - 3
    assert stamp == {p: p.stat().st_mtime_ns for p in lay.root.rglob("*") if p.is_file()}

    # OVERWRITE: everything redone (the synthetic source too: the corruptions are gone).
    redone = prepare.run(root, ["car"], replace(config, overwrite=True))
    assert redone.counts["car/train"]["prepared"] == len(names) and not redone.skipped
    assert sorted(p.stem for p in lay.images.glob("*.JPEG")) == sorted(names)


def test_source_resolution(tmp_path):
    real = tmp_path / "real"
    (layout.release_root(real) / "Images").mkdir(parents=True)
    assert prepare.resolve_source(real, "auto") is False
    with pytest.raises(RuntimeError, match="SYNTHETIC=yes but a real PASCAL3D\\+"):
        prepare.resolve_source(real, "yes")
    empty = tmp_path / "empty"
    assert prepare.resolve_source(empty, "auto") is True
    with pytest.raises(RuntimeError, match="SYNTHETIC=no but no PASCAL3D\\+"):
        prepare.resolve_source(empty, "no")
    with pytest.raises(RuntimeError, match="real PASCAL3D"):
        synthetic.generate(real, ["car"], synthetic.preset("tiny"))


def test_prepare_data_sh_refuses_and_validates(tmp_path):
    (layout.release_root(tmp_path) / "Images").mkdir(parents=True)
    env = {"PATH": "/usr/bin:/bin", "NEMOPOSE_PYTHON": __import__("sys").executable, "DATAROOT": str(tmp_path),
           "SYNTHETIC": "yes", "CATEGORIES": "car"}
    out = subprocess.run(["bash", str(REPO / "PrepareData.sh")], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "SYNTHETIC=yes but a real PASCAL3D+" in out.stderr
    out = subprocess.run(["bash", str(REPO / "PrepareData.sh")], env={**env, "OVERWRITE": "maybe"},
                         capture_output=True, text=True)
    assert out.returncode == 2 and "argument --overwrite: must be yes or no" in out.stderr   # argparse validates
    assert not (tmp_path / "PASCAL3D_train_NeMo").exists()


def test_image_subsets_pkl_gives_the_subtype_lists(tmp_path):
    """NeMo's optional Image_subsets/<cat>_imagenet_<split>.pkl decides the images and the
    per-subtype lists when present."""
    import pickle

    root = tmp_path / "data"
    synthetic.generate(root, ["bus"], synthetic.preset("tiny", occluded=False), progress=False)
    release = _release(root)
    names = release.image_set("bus", "train")
    subtypes = release.subtypes("bus")
    groups = [[] for _ in subtypes]
    groups[0], groups[2] = names[:2], names[2:3]              # names[3:] are in no subset: left out
    (release.root / "Image_subsets").mkdir()
    with open(release.image_subsets_path("bus", "train"), "wb") as fh:
        pickle.dump(groups, fh)
    prepare.run(root, ["bus"], prepare.PrepareConfig(mesh_dims=("single",), occluded=False, synthetic="yes",
                                                     synthetic_size="tiny", progress=False))
    lay = layout.split_layout(root, "train", "bus")
    assert layout.read_list(lay.lists / f"{subtypes[0]}.txt") == names[:2]
    assert layout.read_list(lay.lists / f"{subtypes[2]}.txt") == names[2:3]
    assert layout.read_list(lay.lists / f"{subtypes[1]}.txt") == []
    assert sorted(p.stem for p in lay.images.glob("*.JPEG")) == sorted(names[:3])
    assert sorted(layout.read_list(lay.mesh_list_path("single", 1))) == sorted(names[:3])
