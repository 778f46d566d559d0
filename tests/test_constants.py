from nemopose import constants as K


def test_category_tables_cover_all_categories():
    assert len(K.CATEGORIES) == 12
    for table in (K.SHORT_NAMES, K.NUM_CAD_MODELS, K.TOP50_SIZES, K.RENDER_DISTANCE,
                  K.KEYPOINT_NAMES, K.SUBTYPE_NAMES):
        assert set(table) == set(K.CATEGORIES)


def test_image_sizes_are_top50_rounded_up_to_32():
    # Examples stated in METHOD.md §2.
    expected = {"car": (256, 672), "boat": (480, 1120), "chair": (544, 384), "sofa": (352, 736),
                "train": (256, 608), "tvmonitor": (480, 480), "bicycle": (608, 608),
                "bottle": (512, 736)}
    for cat, size in expected.items():
        assert K.image_size(cat) == size
    for cat in K.CATEGORIES:
        h, w = K.image_size(cat)
        th, tw = K.TOP50_SIZES[cat]
        assert h % 32 == 0 and w % 32 == 0 and 0 <= h - th < 32 and 0 <= w - tw < 32


def test_keypoint_counts():
    assert len(K.KEYPOINT_NAMES["car"]) == 12
    assert len(K.KEYPOINT_NAMES["train"]) == 17
    assert sum(K.NUM_CAD_MODELS.values()) == 79


def test_parsers():
    assert K.parse_categories("car, bus") == ["car", "bus"]
    assert K.parse_categories("all") == list(K.CATEGORIES)
    assert K.parse_occlusion_level("L2") == "FGL2_BGL2"
    assert K.parse_occlusion_level("") == ""
    import pytest
    with pytest.raises(ValueError, match="unknown category"):
        K.parse_categories("cat")
    with pytest.raises(ValueError):
        K.parse_occlusion_level("FGL4_BGL4")
