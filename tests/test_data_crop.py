"""Crop-and-rescale geometry of METHOD.md §6.1 and the box-to-box map."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nemopose import constants
from nemopose.data import crop


def test_reproduces_the_authors_sample_car(fixture_data):
    """With the later pipeline's bbox centring, every box of the real sample is reproduced."""
    sample = np.load(fixture_data / "real" / "nemo_sample_car" / "car_annotation.npz")
    geom = crop.crop_geometry(sample["bbox"], sample["principal"], float(sample["distance"]),
                              (int(sample["height"]), int(sample["width"])), (256, 672), center="bbox")
    np.testing.assert_array_equal(geom.box, sample["box"])
    np.testing.assert_array_equal(geom.box_ori, sample["box_ori"])
    np.testing.assert_array_equal(geom.box_obj, sample["box_obj"])
    np.testing.assert_array_equal(geom.padding, sample["padding"])
    assert geom.resize_rate == float(sample["resize_rate"])
    # NeMo's own centring (the principal point) moves the window, not the object boxes' sizes.
    nemo = crop.crop_geometry(sample["bbox"], sample["principal"], float(sample["distance"]), (334, 500), (256, 672))
    cy, cx = int(165.54615731 * geom.resize_rate), int(256.69908247 * geom.resize_rate)
    assert nemo.box[0] == cy - 128 + nemo.padding[0, 0] and nemo.box[2] == cx - 336 + nemo.padding[1, 0]
    np.testing.assert_array_equal(nemo.box_obj[1] - nemo.box_obj[0], geom.box_obj[1] - geom.box_obj[0])


def test_resize_rate_and_fallback():
    assert crop.original_resize_rate(6.0, (100, 50)) == pytest.approx(1.2)
    assert crop.original_resize_rate(6.0, (100, 50), image_scale=0.5) == pytest.approx(0.6)
    assert crop.original_resize_rate(0.0, (100, 50)) == pytest.approx(224 / 50)
    assert crop.original_resize_rate(0.0, (100, 50), image_scale=0.5) == pytest.approx(112 / 50)


def _naive_crop(image, geom):
    """Pad the resized image, then slice the window (the original's two steps)."""
    resized = crop.resize_bilinear(image, geom.resized_shape)
    padded = np.pad(resized, geom.padding, mode="constant")
    assert padded.shape[:2] == (geom.box[4], geom.box[5])
    y0, y1, x0, x1 = geom.box[:4].astype(int)
    return padded[y0:y1, x0:x1]


@settings(max_examples=60, deadline=None)
@given(h=st.integers(40, 160), w=st.integers(40, 160), distance=st.floats(1.0, 30.0),
       px=st.floats(-20, 180), py=st.floats(-20, 180), frac=st.tuples(*[st.floats(0.0, 1.0)] * 4),
       scale=st.sampled_from([1.0, 0.5, 0.25]))
def test_crop_properties(h, w, distance, px, py, frac, scale):
    x0, x1 = sorted([frac[0] * w, frac[1] * w])
    y0, y1 = sorted([frac[2] * h, frac[3] * h])
    out_shape = constants.image_size("car", scale)
    bbox = np.array([x0, y0, x1 + 2, y1 + 2])
    try:
        geom = crop.crop_geometry(bbox, np.array([px, py]), distance, (h, w), out_shape, scale)
    except crop.CropError:
        return  # the object box is empty in the image or in the crop: reported, not cropped
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    out = crop.apply_crop(image, geom)
    assert out.shape == out_shape + (3,)
    np.testing.assert_array_equal(out, _naive_crop(image, geom))
    # The window is centred on the scaled principal point (in the padded image).
    r = geom.resize_rate
    assert geom.box[0] - geom.padding[0, 0] == int(py * r) - out_shape[0] // 2
    assert geom.box[2] - geom.padding[1, 0] == int(px * r) - out_shape[1] // 2
    # Object box inside the crop; the box map sends box_ori's corners onto box_obj's.
    assert 0 <= geom.box_obj[0] < geom.box_obj[1] <= out_shape[0]
    assert 0 <= geom.box_obj[2] < geom.box_obj[3] <= out_shape[1]
    corners = np.array([[geom.box_ori[0], geom.box_ori[2]], [geom.box_ori[1], geom.box_ori[3]]])
    np.testing.assert_allclose(crop.map_to_crop(corners, geom.box_ori, geom.box_obj),
                               [[geom.box_obj[0], geom.box_obj[2]], [geom.box_obj[1], geom.box_obj[3]]])


def test_resize_matches_opencv_linear_formula():
    """cv2.INTER_LINEAR: sample at (i + 0.5) / r - 0.5, clamp at the border, no antialias."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(13, 17, 3), dtype=np.uint8)
    for size in [(20, 30), (6, 9), (13, 17)]:
        out = crop.resize_bilinear(image, size).astype(float)

        def axis_weights(n_out, n_in):
            src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
            lo = np.floor(src).astype(int)
            hi = np.minimum(lo + 1, n_in - 1)
            return lo, hi, src - lo

        ylo, yhi, fy = axis_weights(size[0], 13)
        xlo, xhi, fx = axis_weights(size[1], 17)
        img = image.astype(float)
        top = img[ylo][:, xlo] * (1 - fx)[None, :, None] + img[ylo][:, xhi] * fx[None, :, None]
        bot = img[yhi][:, xlo] * (1 - fx)[None, :, None] + img[yhi][:, xhi] * fx[None, :, None]
        ref = top * (1 - fy)[:, None, None] + bot * fy[:, None, None]
        assert np.abs(out - ref).max() <= 0.5 + 1e-3, size


def test_object_outside_crop_is_an_error():
    with pytest.raises(crop.CropError, match="outside"):
        crop.crop_geometry(np.array([900.0, 900.0, 950.0, 950.0]), np.array([10.0, 10.0]), 5.0,
                           (1000, 1000), (64, 64))
    with pytest.raises(crop.CropError, match="outside the 50x50 image"):
        crop.crop_geometry(np.array([60.0, 60.0, 70.0, 70.0]), np.array([10.0, 10.0]), 5.0, (50, 50), (64, 64))


def test_render_distance_relation():
    """d_r = 40 f_r / (M f s): the same for a crop at scale s and the faithful crop."""
    assert crop.render_distance_for_crop((256, 672)) == pytest.approx(5 * 8 * (84 / 2) / np.tan(np.radians(6)) / 3000)
    assert crop.render_distance_for_crop((256, 672)) == pytest.approx(5.328, abs=1e-3)
    assert crop.render_distance_for_crop((128, 336), 0.5) == pytest.approx(crop.render_distance_for_crop((256, 672)))
