"""Torch datasets over a prepared split (METHOD.md §9, §10, §13) and the one image loader.

- :func:`load_image_tensor` / :func:`normalize_image`: read a crop as RGB and ImageNet-normalise it
  (defined once, used by training, feature extraction and the tools).
- :class:`TrainingDataset`: the images of one mesh list ``lists3D_<mesh_d>/<cat>/meshNN.txt``
  with their vertex pixels and visibility weights (3D annotations).
- :class:`TestDataset`: the images of a split's list with name, ground-truth pose and
  ``cad_index`` from the 2D annotations (and, optionally, the vertex pixels of the 3D
  annotations), for feature extraction and pose estimation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from . import annotation, layout, pascal3d

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- images


def load_image_tensor(path: str | os.PathLike) -> torch.Tensor:
    """An image file as a uint8 RGB tensor ``(3, H, W)`` (decoded by
    :func:`nemopose.data.pascal3d.load_image_array`, which names the file on failure)."""
    return torch.from_numpy(pascal3d.load_image_array(path)).permute(2, 0, 1).contiguous()


def normalize_image(image: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., 3, H, W)`` -> float32 ImageNet-normalised (torchvision's ToTensor +
    Normalize, as the original), on the image's device."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=image.device).view(3, 1, 1)
    return (image.to(torch.float32) / 255.0 - mean) / std


def load_normalized_image(path: str | os.PathLike, expected_size: tuple[int, int] | None = None) -> torch.Tensor:
    """:func:`load_image_tensor` + :func:`normalize_image`; checks the size ``(H, W)`` if given."""
    image = load_image_tensor(path)
    if expected_size is not None and tuple(image.shape[1:]) != tuple(expected_size):
        raise ValueError(f"{path}: image is {tuple(image.shape[1:])}, expected {tuple(expected_size)} "
                         "(the category image size times the dataset's image_scale)")
    return normalize_image(image)


# ----------------------------------------------------------------------------- vertex weights


def original_vertex_weights(visible: np.ndarray, kp_weights: np.ndarray, vertex_pixels: np.ndarray,
                            image_size: tuple[int, int]) -> np.ndarray:
    """Quirk of the original training set: it multiplies ``visible == 1`` by ``kp_weights`` and
    then ``np.logical_and``s the product with an "inside the image" test, which turns the
    weights into booleans. So the bank update and the loss see 0/1 weights (visible, non-zero
    kp_weight) and the |cos| weighting is lost. The inside test also uses ``np.any`` over
    (row, col): a vertex counts as inside unless BOTH coordinates are out of range (vertex
    pixels are clamped into the crop by the preparation, so this rarely matters).
    ``vertex_weights='weighted'`` uses :func:`weighted_vertex_weights` instead.

    Args:
        visible, kp_weights: ``(nV,)``; vertex_pixels: ``(nV, 2)`` (row, col); image_size (H, W).
    Returns:
        float32 ``(nV,)`` of 0/1.
    """
    w = (visible == 1) * kp_weights
    w = np.logical_and(w, np.any(vertex_pixels >= 0, axis=1))
    w = np.logical_and(w, np.any(vertex_pixels < np.asarray(image_size)[None], axis=1))
    return w.astype(np.float32)


def weighted_vertex_weights(visible: np.ndarray, kp_weights: np.ndarray, vertex_pixels: np.ndarray,
                            image_size: tuple[int, int]) -> np.ndarray:
    """Corrected weights: ``visible * kp_weights`` for vertices with both coordinates inside."""
    inside = np.all((vertex_pixels >= 0) & (vertex_pixels < np.asarray(image_size)[None]), axis=1)
    return ((visible == 1) * kp_weights * inside).astype(np.float32)


VERTEX_WEIGHTS = {"original": original_vertex_weights, "weighted": weighted_vertex_weights}


# ----------------------------------------------------------------------------- datasets


def mesh_list_path(lay: layout.SplitLayout, mesh_d: str, mesh_index: int, azimuth_bins: str = "") -> Path:
    """``lists3D_<mesh_d>/<cat>/meshNN.txt``, or with an azimuth mask (unseen-pose setting)
    ``lists3D_<mesh_d>_azum_<mask>/<cat>/meshNN.txt``."""
    if azimuth_bins:
        return lay.lists3d_azimuth_bins(mesh_d, azimuth_bins) / f"mesh{mesh_index:02d}.txt"
    return lay.mesh_list_path(mesh_d, mesh_index)


class TrainingDataset(Dataset):
    """Training samples of one mesh: ``lists3D_<mesh_d>/<cat>/meshNN.txt`` of the train split.

    Args:
        dataroot: folder holding ``PASCAL3D_train_NeMo``.
        category, mesh_d ('single' | 'multi'), mesh_index (1-based).
        vertex_weights: 'original' (0/1, the original's behaviour) or 'weighted'.
        cache_images: keep the decoded uint8 images in memory (set before DataLoader workers
            fork, so they share it).
        split: 'train' (default); 'val' to measure training losses on validation images.
        azimuth_bins: unseen-pose setting: read ``lists3D_<mesh_d>_azum_<mask>`` instead.

    Each item is a dict: ``image`` float32 ``(3, H, W)``, ``vertex_pixels`` float32 ``(nV, 2)``
    (row, col, clamped into the image), ``weights`` float32 ``(nV,)``, ``index`` (int),
    ``name`` (str).
    """

    def __init__(self, dataroot: str | os.PathLike, category: str, mesh_d: str = "single",
                 mesh_index: int = 1, vertex_weights: str = "original", cache_images: bool = False,
                 split: str = "train", azimuth_bins: str = ""):
        if vertex_weights not in VERTEX_WEIGHTS:
            raise ValueError(f"vertex_weights must be one of {list(VERTEX_WEIGHTS)}, got {vertex_weights!r}")
        self.layout = layout.split_layout(dataroot, split, category)
        self.category, self.mesh_d, self.mesh_index = category, mesh_d, mesh_index
        self.info = layout.load_dataset_info(self.layout.root)
        self.image_size = self.info.image_size(category)
        self.list_path = mesh_list_path(self.layout, mesh_d, mesh_index, azimuth_bins)
        self.names = layout.read_list(self.list_path)
        self._weights_fn = VERTEX_WEIGHTS[vertex_weights]
        self._annotations: list[dict[str, np.ndarray] | None] = [None] * len(self.names)
        self._images: list[torch.Tensor | None] | None = [None] * len(self.names) if cache_images else None
        self.num_vertices = self._annotation(0)["vertex_pixels"].shape[0] if self.names else 0
        if cache_images:
            for i in range(len(self.names)):
                self._images[i] = self._read_image(i)

    def __len__(self) -> int:
        return len(self.names)

    def _read_image(self, index: int) -> torch.Tensor:
        path = self.layout.image_path(self.names[index])
        image = load_image_tensor(path)
        if tuple(image.shape[1:]) != self.image_size:
            raise ValueError(f"{path}: image is {tuple(image.shape[1:])}, expected {self.image_size} "
                             f"(image size of {self.category} x image_scale {self.info.image_scale})")
        return image

    def _annotation(self, index: int) -> dict[str, np.ndarray]:
        cached = self._annotations[index]
        if cached is not None:
            return cached
        path = self.layout.annotation3d_path(self.mesh_d, self.names[index])
        kp, visible, kp_weights = annotation.vertex_arrays(annotation.load(path, require_3d=True), path,
                                                           self.image_size)
        if self.names and hasattr(self, "num_vertices") and kp.shape[0] != self.num_vertices:
            raise annotation.AnnotationError(f"{path}: {kp.shape[0]} vertices, but mesh{self.mesh_index:02d} "
                                             f"annotations of this list have {self.num_vertices}")
        weights = self._weights_fn(visible, kp_weights, kp, self.image_size)
        record = {"vertex_pixels": kp.astype(np.float32), "weights": weights}
        self._annotations[index] = record
        return record

    def image(self, index: int) -> torch.Tensor:
        """The uint8 image ``(3, H, W)`` of sample ``index`` (from the cache when on)."""
        return self._images[index] if self._images is not None else self._read_image(index)

    def vertices(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Vertex pixels float32 ``(nV, 2)`` (row, col) and visibility weights ``(nV,)`` of
        sample ``index``."""
        anno = self._annotation(index)
        return torch.from_numpy(anno["vertex_pixels"]), torch.from_numpy(anno["weights"])

    def __getitem__(self, index: int) -> dict[str, Any]:
        pixels, weights = self.vertices(index)
        return {"image": normalize_image(self.image(index)), "vertex_pixels": pixels, "weights": weights,
                "index": index, "name": self.names[index]}


class TestDataset(Dataset):
    """Images of a prepared split's list, for feature extraction and pose estimation.

    Args:
        dataroot: folder holding the prepared splits.
        split: 'val' (default) or 'train'; occ_level: '' or an occlusion level (val only).
        category, mesh_d, mesh_index: the list ``lists3D_<mesh_d>/<cat><LEVEL>/meshNN.txt``
            (as the original's extraction). ``mesh_index=None`` takes all mesh lists in order.
        list_path: any other list file instead (e.g. ``lists/<cat>/<subtype>.txt``).
        with_vertices: also return the 3D annotation's vertex pixels and visibility.

    Each item is a dict: ``image`` float32 ``(3, H, W)``, ``name``, ``azimuth``,
    ``elevation``, ``theta`` (radians), ``distance`` (PASCAL3D+ units), ``resize_rate`` (r of
    the crop, for :func:`nemopose.geometry.render_distance`), ``principal`` ``(2,)`` (px, py
    in the original image), ``box_obj`` ``(6,)`` (object box in the crop,
    ``[y0, y1, x0, x1, H, W]``), ``cad_index`` (1-based), ``mesh_index``; with_vertices adds
    ``vertex_pixels`` ``(nV, 2)`` and ``visible`` ``(nV,)``.
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, dataroot: str | os.PathLike, category: str, split: str = "val", occ_level: str = "",
                 mesh_d: str = "single", mesh_index: int | None = 1, list_path: str | os.PathLike | None = None,
                 with_vertices: bool = False):
        self.layout = layout.split_layout(dataroot, split, category, occ_level)
        self.category, self.mesh_d, self.with_vertices = category, mesh_d, with_vertices
        self.info = layout.load_dataset_info(self.layout.root)
        self.image_size = self.info.image_size(category)
        self.items: list[tuple[str, int]] = []
        if list_path is not None:
            self.items = [(n, 0) for n in layout.read_list(list_path)]
        elif mesh_index is not None:
            self.items = [(n, mesh_index) for n in layout.read_list(self.layout.mesh_list_path(mesh_d, mesh_index))]
        else:
            paths = sorted(self.layout.lists3d(mesh_d).glob("mesh*.txt"))
            if not paths:
                raise FileNotFoundError(f"no mesh lists in {self.layout.lists3d(mesh_d)}")
            for p in paths:
                self.items += [(n, int(p.stem[4:])) for n in layout.read_list(p)]

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, mesh_index = self.items[index]
        anno = annotation.load(self.layout.annotation_path(name))
        item = {"image": load_normalized_image(self.layout.image_path(name), self.image_size), "name": name,
                **annotation.pose(anno), "resize_rate": annotation.resize_rate(anno, self.info.image_scale),
                "principal": torch.as_tensor(np.asarray(anno["principal"], dtype=np.float64)),
                "box_obj": torch.as_tensor(np.asarray(anno["box_obj"], dtype=np.int64)),
                "cad_index": int(anno["cad_index"]), "mesh_index": mesh_index}
        if self.with_vertices:
            path = self.layout.annotation3d_path(self.mesh_d, name)
            kp, visible, _ = annotation.vertex_arrays(annotation.load(path, require_3d=True), path, self.image_size)
            item["vertex_pixels"] = torch.from_numpy(kp.astype(np.float32))
            item["visible"] = torch.from_numpy(visible == 1)
        return item
