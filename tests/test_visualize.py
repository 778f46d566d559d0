import numpy as np
import pytest
import torch
from PIL import Image

from nemopose import mesh
from nemopose.solve import solver as pose
from nemopose.tools import visualize
from test_pose import CAR_EXTENT, smooth_features, synthetic_maps


def setup_problem(occlude=0.4):
    verts, faces = mesh.cuboid_mesh(*CAR_EXTENT)
    feats = smooth_features(verts)
    clutter = torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(9)), dim=0)
    gt = [1.0, 0.3, 0.1, 5.0]
    maps = synthetic_maps(verts, faces, feats, clutter, [gt], noise=0.05, occlude=occlude, seed=1)
    solver = pose.MeshPoseSolver(verts, faces, feats, (32, 84), 5.0)
    return verts, faces, clutter, maps, solver, dict(zip(("azimuth", "elevation", "theta", "distance"), gt))


def test_occlusion_map_finds_the_occluder():
    _, _, clutter, maps, solver, gt = setup_problem(occlude=0.4)
    labels = visualize.occlusion_map(solver, maps[0], clutter, gt)
    inside = labels != visualize.BACKGROUND
    frac_occ = (labels == visualize.OCCLUDED).sum() / inside.sum()
    assert 0.25 < frac_occ < 0.55
    # the occluder is a band on the left of the object: occluded pixels lie left of visible ones
    cols_occ = np.nonzero(labels == visualize.OCCLUDED)[1].mean()
    cols_vis = np.nonzero(labels == visualize.VISIBLE)[1].mean()
    assert cols_occ < cols_vis


def test_landscape_has_its_minimum_at_the_true_pose():
    _, _, clutter, maps, solver, gt = setup_problem(occlude=0.0)
    land = visualize.loss_landscape(solver, maps[0], clutter, gt, n=41)
    for name, (values, losses) in land.items():
        assert abs(values[np.argmin(losses)] - gt[name]) <= (values[1] - values[0]) * 1.01, name


def test_plot_and_gif(tmp_path):
    verts, faces, clutter, maps, solver, gt = setup_problem()
    image = (np.random.default_rng(0).uniform(0, 255, (256, 672, 3))).astype(np.uint8)
    over = visualize.overlay_mesh(image, verts, faces, gt)
    mask, _ = visualize.render_silhouette(verts, faces, gt, (256, 672))
    assert over.shape == image.shape and (over[mask] != image[mask]).any() and (over[~mask] == image[~mask]).all()
    # the overlay at image scale matches the feature-map silhouette upsampled x8
    small, _ = visualize.render_silhouette(verts, faces, gt, (32, 84))
    big = small.repeat(8, 0).repeat(8, 1)
    assert (big == mask).mean() > 0.97
    res = solver.solve(maps, clutter)
    pred = {k: float(res[k][0]) for k in ("azimuth", "elevation", "theta", "distance", "loss")}
    # On a plain grey input the overlays are the only tinted pixels of the picture's top row:
    # the prediction's cyan and the ground truth's yellow. Measured: 25,900 cyan-ish and
    # 26,500 yellow-ish pixels; with the overlays drawing nothing, 890 and 1,380 (the
    # landscape plots' blue and orange lines). Limits 8,000: 3x from both.
    grey = np.full_like(image, 110)
    png = visualize.plot_solution(tmp_path / "a.png", grey, solver, maps[0], clutter, pred, gt, title="t")
    picture = np.asarray(Image.open(png).convert("RGB")).astype(int)
    r, g, b = picture[..., 0], picture[..., 1], picture[..., 2]
    assert picture.shape[1] > 500
    assert ((b - r > 40) & (g - r > 40)).sum() > 8000          # the predicted mesh (cyan)
    assert ((r - b > 40) & (g - b > 40)).sum() > 8000          # the ground truth (yellow)


def test_gif_frames_follow_the_trajectory(tmp_path):
    """Each GIF frame shows the mesh at its step of the trajectory: on a grey input the
    tinted pixels of frame i are the silhouette of the pose it stands for. Measured IoU 1.00
    with its own pose; 0.31 to 0.81 with the other frames' poses (10 to 30 steps apart).
    Limits: 0.95 and 0.9."""
    verts, faces = mesh.cuboid_mesh(*CAR_EXTENT)
    grey = np.full((128, 336, 3), 110, np.uint8)
    traj = np.linspace([0.2, 0.1, -0.2, 6.5], [1.2, 0.4, 0.2, 4.5], 31)
    gif = visualize.save_optimisation_gif(tmp_path / "a.gif", grey, verts, faces, traj, every=10)
    steps = [0, 10, 20, 30]
    frames = Image.open(gif)
    assert frames.n_frames == len(steps)
    ious = np.zeros((len(steps), len(steps)))
    for i in range(frames.n_frames):
        frames.seek(i)
        tinted = (np.abs(np.asarray(frames.convert("RGB")).astype(int) - 110).max(-1) > 20)
        for j, t in enumerate(steps):
            mask, _ = visualize.render_silhouette(verts, faces, traj[t], grey.shape[:2])
            ious[i, j] = (tinted & mask).sum() / (tinted | mask).sum()
    assert (np.diag(ious) > 0.95).all(), np.round(ious, 2)
    assert (ious - np.eye(len(steps)) < 0.9).all(), np.round(ious, 2)


def test_ground_truth_is_drawn_where_the_annotation_says(tiny_dataroot):
    """The visualiser draws an annotated pose after converting its PASCAL3D+ distance to the
    render camera's: the object's CAD model drawn at the ground truth covers the annotated
    object box of the crop to within a few pixels (with the PASCAL3D+ distance passed
    unconverted it would not)."""
    from nemopose import geometry
    from nemopose.data import annotation, layout
    from nemopose.data.pascal3d import Pascal3DRelease

    release = Pascal3DRelease(layout.release_root(tiny_dataroot))
    diffs, unconverted = [], []
    for cat in ("car", "aeroplane", "chair"):
        lay = layout.split_layout(tiny_dataroot, "val", cat)
        info = layout.load_dataset_info(lay.root)
        crop, map_size = info.image_size(cat), info.feature_map_size(cat)
        for path in sorted(lay.annotations.glob("*.npz")):
            anno = annotation.load(path)
            pose = annotation.pose(anno)
            render_d = float(geometry.render_distance(pose["distance"], annotation.resize_rate(anno), map_size))
            verts, faces = mesh.load_off(release.cad_dir(cat) / f"{int(anno['cad_index']):02d}.off")
            box_obj = anno["box_obj"][:4].astype(int)
            for d, out in ((render_d, diffs), (pose["distance"], unconverted)):
                mask, _ = visualize.render_silhouette(verts, faces, (pose["azimuth"], pose["elevation"],
                                                                     pose["theta"], d), crop)
                rows, cols = np.nonzero(mask)
                box = np.array([rows.min(), rows.max() + 1, cols.min(), cols.max() + 1]) if len(rows) else \
                    np.zeros(4, int)
                out.append(np.abs(box - box_obj).max())
    assert max(diffs) <= 6 and np.median(diffs) <= 2, diffs
    assert np.median(unconverted) > 10, unconverted


def test_landscape_panels_show_the_truth_and_the_prediction_in_their_units():
    """The azimuth runs over [0, 360) with the ground truth and the prediction inside, even
    when they sit on either side of 0 degrees; the distance is in render units and its lowest
    loss is at the prediction within one grid step, or the legend says how far it is."""
    _, _, clutter, maps, solver, gt = setup_problem(occlude=0.0)
    gt = dict(gt, azimuth=np.radians(3.0))                       # the case: a truth at 3 degrees
    pred = dict(gt, azimuth=np.radians(-120.0))                  # reported as -120 (240 on the circle)
    land = visualize.loss_landscape(solver, maps[0], clutter, pred, n=41)
    az = visualize.landscape_panels(land, pred, gt)[0]
    assert az["name"] == "azimuth" and az["unit"] == "degrees"
    assert 0.0 <= az["x"].min() and az["x"].max() < 360.0 and np.all(np.diff(az["x"]) > 0)
    assert az["pred"] == pytest.approx(240.0) and az["gt"] == pytest.approx(3.0)
    for value in (az["pred"], az["gt"]):
        assert az["x"].min() <= value <= az["x"].max()
    assert np.isclose(az["x"], 240.0).any()                     # the prediction is a grid point

    # the maps show the object at gt: solved, the distance's lowest loss is at the prediction
    res = solver.solve(maps, clutter)
    pred = {k: float(res[k][0]) for k in ("azimuth", "elevation", "theta", "distance")}
    gt = setup_problem(occlude=0.0)[-1]
    panels = {p["name"]: p for p in visualize.landscape_panels(
        visualize.loss_landscape(solver, maps[0], clutter, pred, n=61), pred, gt)}
    dist = panels["distance"]
    assert dist["unit"] == "render distance" and dist["gt"] == pytest.approx(gt["distance"])
    assert abs(dist["minimum"] - dist["pred"]) <= dist["step"] * 1.01 and dist["note"] == ""
    # a prediction away from the minimum is explained, not hidden
    off = dict(pred, distance=pred["distance"] + 0.6)
    far = visualize.landscape_panels(visualize.loss_landscape(solver, maps[0], clutter, off, n=61), off, gt)[3]
    assert "grid steps\nfrom the prediction" in far["note"]


def test_the_occlusion_map_says_it_is_at_the_predicted_pose():
    assert "at the predicted pose" in visualize.OCCLUSION_TITLE
