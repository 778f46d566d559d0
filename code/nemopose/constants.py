"""Per-category constants of NeMo on PASCAL3D+ (METHOD.md §2).

Everything that depends on the category lives here, once. Derived quantities (the image
size used for crops and feature maps) are computed from the tables they come from, never
copied.
"""

from __future__ import annotations

import math

from .errors import UsageError

CATEGORIES: tuple[str, ...] = (
    "aeroplane", "bicycle", "boat", "bottle", "bus", "car",
    "chair", "diningtable", "motorbike", "sofa", "train", "tvmonitor",
)

SHORT_NAMES: dict[str, str] = {
    "aeroplane": "plane", "bicycle": "bike", "boat": "boat", "bottle": "bottle",
    "bus": "bus", "car": "car", "chair": "chair", "diningtable": "table",
    "motorbike": "mbike", "sofa": "sofa", "train": "train", "tvmonitor": "tv",
}

NUM_CAD_MODELS: dict[str, int] = {
    "aeroplane": 8, "bicycle": 6, "boat": 6, "bottle": 8, "bus": 6, "car": 10,
    "chair": 10, "diningtable": 6, "motorbike": 5, "sofa": 6, "train": 4, "tvmonitor": 4,
}

# (H, W) of the 50 largest objects of each category; the crop size is derived from it.
TOP50_SIZES: dict[str, tuple[int, int]] = {
    "car": (256, 672), "aeroplane": (320, 1024), "bicycle": (600, 600), "boat": (455, 1120),
    "bottle": (512, 720), "bus": (320, 800), "chair": (530, 370), "diningtable": (320, 800),
    "motorbike": (512, 512), "sofa": (337, 720), "train": (240, 600), "tvmonitor": (468, 463),
}

# Initial camera distance of the pose solver, per category (render camera units).
RENDER_DISTANCE: dict[str, float] = {
    "car": 5.0, "bus": 5.2, "motorbike": 4.5, "bottle": 5.75, "boat": 8.0, "bicycle": 5.2,
    "aeroplane": 7.0, "sofa": 5.4, "tvmonitor": 5.5, "chair": 4.0, "diningtable": 7.0,
    "train": 3.75,
}

KEYPOINT_NAMES: dict[str, tuple[str, ...]] = {
    "aeroplane": ("left_wing", "right_wing", "rudder_upper", "noselanding", "left_elevator",
                  "rudder_lower", "right_elevator", "tail"),
    "bicycle": ("seat_front", "right_back_wheel", "right_pedal_center", "right_front_wheel",
                "left_front_wheel", "left_handle", "seat_back", "head_center", "left_back_wheel",
                "left_pedal_center", "right_handle"),
    "boat": ("head_down", "head", "tail_right", "tail_left", "head_right", "tail", "head_left"),
    "bottle": ("body", "bottom_left", "bottom", "mouth", "body_right", "body_left",
               "bottom_right"),
    "bus": ("body_front_left_lower", "body_front_right_upper", "body_back_right_lower",
            "right_back_wheel", "body_back_left_upper", "right_front_wheel", "left_front_wheel",
            "body_front_left_upper", "body_back_left_lower", "body_back_right_upper",
            "body_front_right_lower", "left_back_wheel"),
    "car": ("left_front_wheel", "left_back_wheel", "right_front_wheel", "right_back_wheel",
            "upper_left_windshield", "upper_right_windshield", "upper_left_rearwindow",
            "upper_right_rearwindow", "left_front_light", "right_front_light",
            "left_back_trunk", "right_back_trunk"),
    "chair": ("seat_upper_right", "back_upper_left", "seat_lower_right", "leg_lower_left",
              "back_upper_right", "leg_upper_right", "seat_lower_left", "leg_upper_left",
              "seat_upper_left", "leg_lower_right"),
    "diningtable": ("top_lower_left", "top_up", "top_lower_right", "leg_lower_left",
                    "leg_upper_right", "top_right", "top_left", "leg_upper_left",
                    "top_upper_left", "top_upper_right", "top_down", "leg_lower_right"),
    "motorbike": ("front_seat", "right_back_wheel", "back_seat", "right_front_wheel",
                  "left_front_wheel", "headlight_center", "right_handle_center",
                  "left_handle_center", "head_center", "left_back_wheel"),
    "sofa": ("top_right_corner", "seat_bottom_right", "left_bottom_back", "seat_bottom_left",
             "front_bottom_right", "top_left_corner", "right_bottom_back", "seat_top_left",
             "front_bottom_left", "seat_top_right"),
    "train": ("head_top", "mid1_left_bottom", "head_left_top", "mid1_left_top",
              "mid2_right_bottom", "head_right_bottom", "mid1_right_bottom", "head_left_bottom",
              "mid2_left_top", "mid2_left_bottom", "head_right_top", "tail_right_top",
              "tail_left_top", "tail_right_bottom", "tail_left_bottom", "mid2_right_top",
              "mid1_right_top"),
    "tvmonitor": ("back_top_left", "back_bottom_right", "front_bottom_right", "front_top_right",
                  "front_top_left", "back_bottom_left", "back_top_right", "front_bottom_left"),
}

SUBTYPE_NAMES: dict[str, tuple[str, ...]] = {
    "aeroplane": ("airliner", "fighter", "propeller", "others"),
    "bicycle": ("mountain", "race", "tandem", "others"),
    "boat": ("cabin", "cargo", "cruise", "rowing", "sailing", "others"),
    "bottle": ("beer", "ketchup", "pop", "water", "wine", "others"),
    "bus": ("double", "long", "school", "others"),
    "car": ("hatchback", "mini", "minivan", "race", "sedan", "SUV", "truck", "wagon", "others"),
    "chair": ("folding", "lounge", "straight", "swivel", "others"),
    "diningtable": ("ellipse", "rectangle", "round", "square", "others"),
    "motorbike": ("cruiser", "scooter", "sport", "trail", "others"),
    "sofa": ("one", "two", "three", "more", "others"),
    "train": ("body", "bullet", "steam", "others"),
    "tvmonitor": ("crtmonitor", "hdtv", "lcdmonitor", "tv", "others"),
}

# Occluded-PASCAL3D+ levels: foreground occluded 20-40 / 40-60 / 60-80 %.
OCCLUSION_LEVELS: tuple[str, ...] = ("FGL1_BGL1", "FGL2_BGL2", "FGL3_BGL3")
OCCLUSION_FG_RANGES: dict[str, tuple[float, float]] = {
    "FGL1_BGL1": (0.2, 0.4), "FGL2_BGL2": (0.4, 0.6), "FGL3_BGL3": (0.6, 0.8),
}

MESH_DIMENSIONS: tuple[str, ...] = ("single", "multi")


def check_mesh_d(mesh_d: str) -> str:
    if mesh_d not in MESH_DIMENSIONS:
        raise UsageError(f"mesh dimension must be one of {MESH_DIMENSIONS}, got {mesh_d!r}")
    return mesh_d


# Camera and network geometry (METHOD.md §3, §6.1, §7, §11).
DOWNSAMPLE_RATE = 8              # stride of the feature map (network input pixels per cell)
IMAGE_SIZE_MULTIPLE = 32         # category image sizes are the top-50 sizes rounded up to this
RENDER_FOV_DEGREES = 12.0        # field of view of the pose solver's render camera
PASCAL_VIEWPORT = 3000.0         # PASCAL3D+ viewport M: focal length in pixels = M * focal
PASCAL_FOCAL = 1.0               # PASCAL3D+ focal f (every record has f = 1)
OBJECT_NORMALIZE_DISTANCE = 5.0  # crops rescale every object to its size at distance 5 (r = d / 5)


def check_category(category: str) -> str:
    if category not in TOP50_SIZES:
        raise UsageError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")
    return category


def round_up(value: int, multiple: int = IMAGE_SIZE_MULTIPLE) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return int(math.ceil(value / multiple) * multiple)


def image_size(category: str, image_scale: float = 1.0) -> tuple[int, int]:
    """Crop / network input size (H, W) of a category.

    Scale 1 (faithful, METHOD.md §2): the top-50 size rounded up to a multiple of 32. Other
    scales (the synthetic CPU demo uses 0.5): that size times ``image_scale``, rounded to
    a multiple of the feature stride.
    """
    check_category(category)
    h, w = (round_up(v) for v in TOP50_SIZES[category])
    if image_scale == 1.0:
        return h, w
    if not image_scale > 0:
        raise ValueError(f"image_scale must be > 0, got {image_scale}")
    step = DOWNSAMPLE_RATE
    return (max(step, int(round(h * image_scale / step)) * step),
            max(step, int(round(w * image_scale / step)) * step))


def feature_map_size(category: str, image_scale: float = 1.0) -> tuple[int, int]:
    """(h, w) of the stride-8 feature map of a category's crops at ``image_scale``."""
    h, w = image_size(category, image_scale)
    return h // DOWNSAMPLE_RATE, w // DOWNSAMPLE_RATE


def _category_items(spec: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Words of a category list: ``"car bus"``, ``"car,bus"``, ``["car", "bus"]``, ``["car bus"]``."""
    if spec is None:
        return []
    parts = [spec] if isinstance(spec, str) else list(spec)
    return [w for part in parts for w in part.replace(",", " ").split()]


def wants_all(spec: str | list[str] | tuple[str, ...] | None) -> bool:
    """True when a category list asks for "all" (or is empty). What "all" means depends on
    the question: every category (preparation), every prepared one (training:
    :func:`nemopose.data.layout.prepared_categories`), every trained one (evaluation:
    :meth:`nemopose.experiment.Experiment.trained_categories`)."""
    items = _category_items(spec)
    return not items or items == ["all"]


def parse_categories(spec: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Parse a category list such as ``"car bus"``, ``"car,bus"``, ``["car", "bus"]``;
    ``"all"`` gives all 12 (see :func:`wants_all` for the other meanings of "all")."""
    if wants_all(spec):
        return list(CATEGORIES)
    return [check_category(c) for c in _category_items(spec)]


def parse_occlusion_level(level: str | None) -> str:
    """'' (unoccluded, L0) or one of OCCLUSION_LEVELS; accepts 'L0', 'FGL1_BGL1', 'L1' ..."""
    if level in (None, "", "L0", "0"):
        return ""
    aliases = {f"L{i + 1}": lv for i, lv in enumerate(OCCLUSION_LEVELS)}
    aliases.update({str(i + 1): lv for i, lv in enumerate(OCCLUSION_LEVELS)})
    level = aliases.get(level, level)
    if level not in OCCLUSION_LEVELS:
        raise ValueError(f"unknown occlusion level {level!r}; expected L0 or one of {OCCLUSION_LEVELS}")
    return level


# ----------------------------------------------------------------------------- the authors' release (METHOD.md §13)

EPOCH_RELEASED = 799
# mesh dimension -> (archive name, Google Drive id) of the authors' trained models
AUTHORS_CHECKPOINTS: dict[str, tuple[str, str]] = {
    "single": ("NeMo_Single_799.zip", "1X1NCx22TFGJs108TqDgaPqrrKlExZGP-"),
    "multi": ("NeMo_Multi_799.zip", "1e6bA6hpFEqZC59qsdl9otkkSHR1SYszz"),
}
# The authors' reported L0 results with those checkpoints (real PASCAL3D+), per category in
# CATEGORIES order, then the Mean: metric -> values.
_PUBLISHED = {
    "single": {"acc_pi6": (81.1, 79.8, 69.0, 87.6, 88.2, 98.5, 86.2, 73.9, 83.7, 95.4, 81.3, 82.0, 85.5),
               "acc_pi18": (47.8, 27.9, 35.9, 49.0, 84.4, 94.9, 47.3, 51.4, 31.0, 59.6, 68.1, 42.4, 60.2),
               "med_err": (10.6, 16.8, 15.4, 10.3, 3.2, 3.2, 10.5, 9.7, 14.6, 8.5, 5.4, 12.0, 8.9)},
    "multi": {"acc_pi6": (78.1, 81.2, 64.9, 88.2, 94.4, 98.6, 87.4, 81.5, 84.2, 96.0, 90.6, 85.9, 87.0),
              "acc_pi18": (38.8, 35.0, 33.1, 50.2, 91.4, 95.8, 48.5, 58.2, 36.2, 65.4, 77.9, 54.5, 62.8),
              "med_err": (13.0, 14.1, 16.4, 10.0, 2.6, 2.9, 10.4, 8.3, 13.9, 7.3, 4.7, 9.0, 8.5)},
}


def published_l0(mesh_d: str) -> dict[str, dict[str, float]]:
    """The authors' L0 numbers for ``mesh_d``: {category or "Mean": {metric: value}}."""
    table = _PUBLISHED[check_mesh_d(mesh_d)]
    return {name: {metric: values[i] for metric, values in table.items()}
            for i, name in enumerate(CATEGORIES + ("Mean",))}
