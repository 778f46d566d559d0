"""Per-category constants of NeMo on PASCAL3D+ (SPEC section 2).

Everything that depends on the category lives here, once. Derived quantities (the image
size used for crops and feature maps) are computed from the tables they come from, never
copied.
"""

from __future__ import annotations

import math

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

# Network and rendering geometry.
DOWNSAMPLE_RATE = 8          # stride of the feature map
RENDER_FOV_DEGREES = 12.0    # field of view of the pose solver's render camera
OBJECT_NORMALIZE_DISTANCE = 5.0  # crops rescale every object to its size at distance 5
IMAGE_SIZE_MULTIPLE = 32


def check_category(category: str) -> str:
    if category not in TOP50_SIZES:
        raise ValueError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")
    return category


def round_up(value: int, multiple: int = IMAGE_SIZE_MULTIPLE) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return int(math.ceil(value / multiple) * multiple)


def image_size(category: str) -> tuple[int, int]:
    """Crop / network input size (H, W) of a category: the top-50 size rounded up to 32."""
    check_category(category)
    h, w = TOP50_SIZES[category]
    return round_up(h), round_up(w)


IMAGE_SIZES: dict[str, tuple[int, int]] = {c: image_size(c) for c in CATEGORIES}


def feature_map_size(category: str) -> tuple[int, int]:
    """(h, w) of the stride-8 feature map of a category."""
    h, w = image_size(category)
    return h // DOWNSAMPLE_RATE, w // DOWNSAMPLE_RATE


def parse_categories(spec: str | list[str] | None) -> list[str]:
    """Parse a category list such as ``"car bus"``, ``"car,bus"`` or ``"all"``."""
    if spec is None:
        return list(CATEGORIES)
    items = spec if isinstance(spec, list) else spec.replace(",", " ").split()
    if not items or items == ["all"]:
        return list(CATEGORIES)
    return [check_category(c) for c in items]


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
