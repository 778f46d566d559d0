"""Reading the PASCAL3D+ release 1.1 (ImageNet part) and OccludedPASCAL3D (METHOD.md §6).

Layout read here (real or synthetic, identical):

    PASCAL3D+_release1.1/
        Images/<cat>_imagenet/<id>.JPEG
        Annotations/<cat>_imagenet/<id>.mat          ``record`` struct (:mod:`nemopose.data.mat_record`)
        Image_sets/<cat>_imagenet_{train,val}.txt     one id per line
        Image_sets/<cat>_imagenet_subtype.txt         one subtype name per line
        Image_subsets/<cat>_imagenet_{train,val}.pkl  optional (NeMo's): ids per subtype
        CAD/<cat>/NN.off                              CAD models (01, 02, ...)
    OccludedPASCAL3D/
        images/<cat><LEVEL>/<id>.JPEG
        annotations/<cat><LEVEL>/<id>.npz             key ``occluder_mask`` (H x W bool)

Every reader raises an error naming the file (and the field) it could not use.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import constants, mesh
from ..errors import NemoPoseError
from .mat_record import RecordError

DATASET = "imagenet"  # only the ImageNet part of PASCAL3D+ is used


class ImageReadError(NemoPoseError, ValueError):
    """An image file that cannot be decoded."""


class UnsafePickleError(NemoPoseError, ValueError):
    """A pickle holding something other than lists, tuples and strings (refused unread)."""


# ----------------------------------------------------------------------------- Image_subsets pickles

# The only globals an Image_subsets pickle may name: the built-in list, tuple and str (Python 2
# pickles spell the module ``__builtin__``). Lists, tuples and strings themselves need no global.
_SUBSET_GLOBALS = {(module, name) for module in ("builtins", "__builtin__") for name in ("list", "tuple", "str")}


class _SubsetsUnpickler(pickle.Unpickler):
    """Unpickles lists, tuples and strings only.

    Code runs during unpickling only through a callable that the pickle names (GLOBAL,
    STACK_GLOBAL, INST, the extension registry), and every such name passes through
    :meth:`find_class`; anything but list/tuple/str is refused there, before it is called.
    Persistent ids are refused by the base class.
    """

    def find_class(self, module: str, name: str):
        if (module, name) in _SUBSET_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused {module}.{name}: only lists, tuples and strings are read")


def _check_lists_of_strings(value) -> None:
    """Raise unless ``value`` is a list (or tuple) of lists (or tuples) of strings."""
    if not isinstance(value, (list, tuple)):
        raise pickle.UnpicklingError(f"holds a {type(value).__name__}, not a list")
    for group in value:
        if not isinstance(group, (list, tuple)):
            raise pickle.UnpicklingError(f"holds a {type(group).__name__} where a list of image ids is expected")
        for name in group:
            if not isinstance(name, str):
                raise pickle.UnpicklingError(f"holds a {type(name).__name__} where an image id (a string) "
                                             "is expected")


def load_string_lists(path: str | os.PathLike) -> list[list[str]]:
    """A pickle of a list of lists (or tuples) of strings, read safely: NeMo's ``Image_subsets`` files,
    which come from a download, are read with this instead of ``pickle.load``.

    Returns:
        a list with one list of strings per entry.
    Raises:
        UnsafePickleError naming the file when it holds anything else (an object, a
        function call, numbers...) or is not a pickle; nothing in it is executed.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            value = _SubsetsUnpickler(fh).load()
        _check_lists_of_strings(value)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, UnicodeDecodeError) as exc:
        raise UnsafePickleError(f"{path}: not read: {exc} (expected lists of image ids; "
                                "delete the file or download Image_subsets.zip again)") from exc
    return [list(group) for group in value]


# ----------------------------------------------------------------------------- images


def load_image_array(path: str | os.PathLike) -> np.ndarray:
    """Decode an image fully into (H, W, 3) uint8 RGB (grey images are converted).

    Raises:
        ImageReadError naming the file when it is missing, truncated or not an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()  # force the full decode: a truncated JPEG fails here, not later
            return np.array(img.convert("RGB"))
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: image file does not exist") from exc
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc


# ----------------------------------------------------------------------------- release


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def is_cad_model_file(name: str) -> bool:
    """Quirk of the original cuboid tool: only names shorter than 7 characters ending in
    ``.off`` (``01.off`` ... ``99.off``) are CAD models; other files in the folder are not."""
    return len(name) < 7 and name.endswith(".off")


@dataclass(frozen=True)
class Pascal3DRelease:
    """Paths and readers of a PASCAL3D+ release folder (``PASCAL3D+_release1.1``)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def image_dir(self, category: str) -> Path:
        return self.root / "Images" / f"{category}_{DATASET}"

    def annotation_dir(self, category: str) -> Path:
        return self.root / "Annotations" / f"{category}_{DATASET}"

    def image_path(self, category: str, name: str) -> Path:
        return self.image_dir(category) / f"{name}.JPEG"

    def annotation_path(self, category: str, name: str) -> Path:
        return self.annotation_dir(category) / f"{name}.mat"

    def image_set_path(self, category: str, split: str) -> Path:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return self.root / "Image_sets" / f"{category}_{DATASET}_{split}.txt"

    def subtype_path(self, category: str) -> Path:
        return self.root / "Image_sets" / f"{category}_{DATASET}_subtype.txt"

    def image_subsets_path(self, category: str, split: str) -> Path:
        return self.root / "Image_subsets" / f"{category}_{DATASET}_{split}.pkl"

    def cad_dir(self, category: str) -> Path:
        return self.root / "CAD" / category

    def image_set(self, category: str, split: str) -> list[str]:
        """Image ids of ``Image_sets/<cat>_imagenet_<split>.txt`` (extensions dropped)."""
        return [n.rsplit(".", 1)[0] if n.endswith(".JPEG") else n
                for n in _read_lines(self.image_set_path(category, split))]

    def subtypes(self, category: str) -> list[str]:
        """Subtype names of ``Image_sets/<cat>_imagenet_subtype.txt``."""
        return _read_lines(self.subtype_path(category))

    def image_subsets(self, category: str, split: str) -> list[list[str]] | None:
        """NeMo's optional ``Image_subsets/<cat>_imagenet_<split>.pkl``: a list indexed by
        subtype position, each an iterable of image ids; None when the file is absent."""
        path = self.image_subsets_path(category, split)
        if not path.is_file():
            return None
        return load_string_lists(path)     # a restricted unpickler: the file comes from a download

    def cad_model_paths(self, category: str) -> list[Path]:
        """Sorted CAD model files ``CAD/<cat>/NN.off`` (see :func:`is_cad_model_file`)."""
        folder = self.cad_dir(category)
        if not folder.is_dir():
            raise FileNotFoundError(f"CAD folder {folder} does not exist")
        return sorted(p for p in folder.iterdir() if is_cad_model_file(p.name))

    @staticmethod
    def cad_model_index(path: Path) -> int:
        """1-based index of a CAD model file (``03.off`` -> 3)."""
        try:
            return int(Path(path).stem)
        except ValueError as exc:
            raise ValueError(f"{path}: CAD model names must be NN.off") from exc

    def load_cad_model(self, category: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Vertices (V, 3) and faces (F, 3) of ``CAD/<cat>/<index:02d>.off``.

        Raises:
            mesh.MeshFormatError naming the file.
        """
        return mesh.load_off(self.cad_dir(category) / f"{index:02d}.off")


@dataclass(frozen=True)
class OccludedRelease:
    """Paths and readers of an OccludedPASCAL3D folder."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def image_dir(self, category: str, level: str) -> Path:
        return self.root / "images" / f"{category}{constants.parse_occlusion_level(level)}"

    def mask_dir(self, category: str, level: str) -> Path:
        return self.root / "annotations" / f"{category}{constants.parse_occlusion_level(level)}"

    def image_path(self, category: str, level: str, name: str) -> Path:
        return self.image_dir(category, level) / f"{name}.JPEG"

    def mask_path(self, category: str, level: str, name: str) -> Path:
        return self.mask_dir(category, level) / f"{name}.npz"


def load_occluder_mask(path: str | os.PathLike) -> np.ndarray:
    """(H, W) bool ``occluder_mask`` of an OccludedPASCAL3D annotation npz.

    Raises:
        RecordError naming the file when it is missing, unreadable or lacks the key.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "occluder_mask" not in data.files:
                raise RecordError(f"{path}: missing or malformed field 'occluder_mask'")
            mask = np.asarray(data["occluder_mask"])
    except FileNotFoundError as exc:
        raise RecordError(f"{path}: occluder mask file does not exist") from exc
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, RecordError):
            raise
        raise RecordError(f"{path}: cannot read occluder mask ({type(exc).__name__}: {exc})") from exc
    if mask.ndim != 2:
        raise RecordError(f"{path}: occluder_mask must be (H, W), got shape {mask.shape}")
    return mask.astype(bool)
