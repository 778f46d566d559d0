import numpy as np
import pytest

from nemopose import constants
from nemopose.data import annotation, layout


def test_paths_follow_spec_layout(tmp_path):
    lay = layout.split_layout(tmp_path, "val", "car", "FGL1_BGL1")
    assert lay.root == tmp_path / "PASCAL3D_OCC_NeMo"
    assert lay.annotation_path("n1") == tmp_path / "PASCAL3D_OCC_NeMo/annotations/carFGL1_BGL1/n1.npz"
    assert lay.mesh_list_path("multi", 3) == tmp_path / "PASCAL3D_OCC_NeMo/lists3D_multi/carFGL1_BGL1/mesh03.txt"
    assert layout.split_layout(tmp_path, "train", "bus").images == tmp_path / "PASCAL3D_train_NeMo/images/bus"
    with pytest.raises(ValueError):
        layout.split_layout(tmp_path, "train", "bus", "L1")
    with pytest.raises(ValueError):
        layout.split_layout(tmp_path, "val", "bus").annotations3d("double")


def test_list_round_trip(tmp_path):
    layout.write_list(tmp_path / "l.txt", ["a_1", "b_2"])
    assert (tmp_path / "l.txt").read_text() == "a_1.JPEG\nb_2.JPEG\n"
    assert layout.read_list(tmp_path / "l.txt") == ["a_1", "b_2"]


def test_real_annotation_loads(fixture_data):
    anno = annotation.load(fixture_data / "real" / "nemo_sample_car" / "car_annotation.npz")
    assert str(anno["name"]) == "n02958343_2202"
    assert anno["cropped_kp_list"].shape == (12, 2)
    assert float(anno["distance"]) == pytest.approx(5.895104611896633)


def test_missing_key_is_reported(tmp_path):
    np.savez(tmp_path / "x.npz", name="x")
    with pytest.raises(annotation.AnnotationError, match="x.npz: missing annotation keys"):
        annotation.load(tmp_path / "x.npz")
    (tmp_path / "y.npz").write_bytes(b"garbage")
    with pytest.raises(annotation.AnnotationError, match="y.npz: cannot read"):
        annotation.load(tmp_path / "y.npz")


def test_scaled_image_size_and_info(tmp_path):
    assert constants.image_size("car", 1.0) == (256, 672)
    assert constants.image_size("car", 0.5) == (128, 336)
    layout.save_dataset_info(tmp_path, layout.DatasetInfo(synthetic=True, image_scale=0.5, source="gen"))
    info = layout.load_dataset_info(tmp_path)
    assert info.synthetic and info.image_size("car") == (128, 336)
    assert not layout.load_dataset_info(tmp_path / "none").synthetic
