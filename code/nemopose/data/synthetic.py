"""A synthetic PASCAL3D+ in the real release layout and formats (METHOD.md §14).

Writes, under ``<dataroot>``::

    PASCAL3D+_release1.1/
        SYNTHETIC.json                        marker: this is NOT PASCAL3D+ (config, seed)
        Images/<cat>_imagenet/<id>.JPEG
        Annotations/<cat>_imagenet/<id>.mat   ``record`` structs (:mod:`.mat_record`, the reader's format)
        Image_sets/<cat>_imagenet_{train,val,subtype}.txt
        CAD/<cat>/NN.off, CAD/<cat>.mat       procedural CAD models (+ 3D anchors)
    OccludedPASCAL3D/
        SYNTHETIC.json
        images/<cat><LEVEL>/<id>.JPEG, annotations/<cat><LEVEL>/<id>.npz (occluder_mask)

so that the real preparation code (pascal3d, prepare, annotate3d) runs on it unchanged.
The objects are :mod:`.synthetic_cad`'s, the images :mod:`.synthetic_scene`'s; this module
holds the settings (:class:`SyntheticConfig`, presets ``tiny`` and ``demo``) and writes
the dataset. Gaussian noise and JPEG compression finish each image.

Everything is deterministic from the seed: each image has its own random stream derived
from (seed, category, split, index), so a category or an image is the same whichever
subset is generated.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import constants, mesh
from ..cli import add_categories_argument, run as run_cli
from ..errors import NemoPoseError
from ..cli.progress import progress_bar
from ..utils import atomic_savez, atomic_write_bytes, atomic_write_json, atomic_write_text, setup_logging
from . import layout
from .mat_record import ObjectRecord, Viewpoint, save_record
from .pascal3d import OccludedRelease, Pascal3DRelease
from .synthetic_cad import CadModel, item_rng, save_cad_mat
from .synthetic_cad import cad_models as _cad_models
from .synthetic_scene import (FOCAL, VIEWPORT, Rendered, View, clutter_background, keypoint_status, paste_occluders,
    render_object, sample_view)

log = logging.getLogger(__name__)

GENERATOR = "nemopose.data.synthetic"
GENERATOR_VERSION = 1


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. Presets: ``tiny`` (unit tests) and ``demo`` (the CPU demo).

    Attributes:
        size: preset name (recorded in the marker).
        seed: base seed; every image has its own stream derived from it.
        n_train, n_val: images per category and split.
        n_cad: CAD models per category.
        width_range: original image widths (pixels), uniform.
        aspect_range: height / width, uniform.
        object_fraction: the object's bbox spans this fraction of the image (limiting side).
        cad_vertices: approximate vertex count of each procedural CAD model.
        noise_sigma: Gaussian pixel noise (0-255 scale).
        jpeg_quality: of the written images.
        occluded: also write the OccludedPASCAL3D-style levels for the val images.
    """

    size: str = "demo"
    seed: int = 0
    n_train: int = 120
    n_val: int = 40
    n_cad: int = 3
    width_range: tuple[int, int] = (440, 540)
    aspect_range: tuple[float, float] = (0.66, 0.8)
    object_fraction: tuple[float, float] = (0.4, 0.8)
    cad_vertices: int = 2000
    noise_sigma: float = 3.0
    jpeg_quality: int = 92
    occluded: bool = True

    def marker(self) -> dict[str, Any]:
        """The settings that define the data (what a marker must match to reuse it)."""
        out = asdict(self)
        out.pop("occluded")
        out["generator"], out["version"] = GENERATOR, GENERATOR_VERSION
        return json.loads(json.dumps(out))  # tuples -> lists, as read back from JSON


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_train=4, n_val=3, n_cad=2, width_range=(240, 300), cad_vertices=800),
    # ~25 s per category on 2 busy CPU cores (generation ~2/3 of PrepareData's time); images
    # 440-540 px wide: at image scale 0.5 the crops are still downscaled from the originals.
    "demo": dict(n_train=120, n_val=40, n_cad=3, width_range=(440, 540), cad_vertices=2000),
}


def preset(size: str, seed: int = 0, **overrides: Any) -> SyntheticConfig:
    if size not in PRESETS:
        raise ValueError(f"unknown synthetic size {size!r}; expected one of {sorted(PRESETS)}")
    return SyntheticConfig(size=size, seed=seed, **{**PRESETS[size], **overrides})


def save_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- generation


def image_name(category: str, split: str, index: int) -> str:
    """Image ids say what they are: ``synthetic_<cat>_<split>_NNNN``."""
    return f"synthetic_{category}_{split}_{index:04d}"


def _to_uint8(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """[0, 1] float image plus Gaussian noise (0-255 scale) -> uint8."""
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))   # torch's randn is much faster
    noise = torch.randn(image.shape, generator=gen) * sigma
    noisy = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)) * 255 + noise
    return noisy.round_().clamp_(0, 255).to(torch.uint8).numpy()


def cad_models(category: str, config: SyntheticConfig) -> list[CadModel]:
    """The category's CAD models for ``config`` (:func:`.synthetic_cad.cad_models`)."""
    return _cad_models(category, config.n_cad, config.cad_vertices, config.seed)


def object_record(name: str, view: View, bbox: np.ndarray, cad_index: int, subtype: str,
                  status: np.ndarray, xy: np.ndarray) -> ObjectRecord:
    """The annotation of a synthetic image (what its ``.mat`` file holds)."""
    viewpoint = Viewpoint(view.azimuth, view.elevation, view.theta, view.distance, FOCAL, view.px, view.py, VIEWPORT)
    return ObjectRecord(name=name, width=view.width, height=view.height, bbox=np.asarray(bbox, dtype=np.float64),
                        cad_index=cad_index, viewpoint=viewpoint, keypoint_status=np.asarray(status),
                        keypoint_xy=np.asarray(xy, dtype=np.float64), subtype=subtype)


def generate_image(category: str, split: str, index: int, models: list[CadModel],
                   config: SyntheticConfig) -> tuple[np.ndarray, ObjectRecord, Rendered]:
    """Render one image and its record. Returns (image float (H, W, 3), record, render)."""
    rng = item_rng(config.seed, category, split, index)
    cad_index = int(rng.integers(len(models))) + 1
    model = models[cad_index - 1]
    view = sample_view(rng, model, category, config.width_range, config.aspect_range, config.object_fraction)
    rendered = render_object(model, view.azimuth, view.elevation, view.theta, view.distance,
                             (view.px, view.py), (view.height, view.width))
    background = clutter_background(rng, view.height, view.width)
    image = np.where(rendered.mask[..., None], rendered.colour, background)
    rows, cols = np.nonzero(rendered.mask)
    bbox = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.float64)
    status, xy = keypoint_status(model, view, rendered)
    subtypes = constants.SUBTYPE_NAMES[category]
    subtype = subtypes[(cad_index - 1) % (len(subtypes) - 1)]
    record = object_record(image_name(category, split, index), view, bbox, cad_index, subtype, status, xy)
    return image, record, rendered


def write_markers(dataroot: Path, config: SyntheticConfig, categories: list[str]) -> None:
    """``SYNTHETIC.json`` in the release (and occluded) folder: what made it, and which
    categories are complete. Rewritten only when it changes."""
    note = ("SYNTHETIC data generated by nemopose.data.synthetic: NOT PASCAL3D+. Results on it "
            "must never be reported as PASCAL3D+ results.")
    body = {"synthetic": True, "note": note, "config": config.marker(), "categories": sorted(categories)}
    folders = [layout.release_root(dataroot)] + ([layout.occluded_root(dataroot)] if config.occluded else [])
    for folder in folders:
        path = folder / layout.SYNTHETIC_MARKER
        if not path.is_file() or json.loads(path.read_text()) != body:
            atomic_write_json(path, body)


def read_marker(dataroot: Path) -> dict[str, Any] | None:
    path = layout.release_root(dataroot) / layout.SYNTHETIC_MARKER
    if not path.is_file():
        return None
    return json.loads(path.read_text())


class SyntheticMismatch(NemoPoseError, RuntimeError):
    """A synthetic dataset made with other settings is already at the data root."""


def _remove_category(dataroot: Path, category: str) -> None:
    """Delete a category's generated files (only ever inside marked synthetic folders)."""
    release, occ = Pascal3DRelease(layout.release_root(dataroot)), OccludedRelease(layout.occluded_root(dataroot))
    targets = [release.image_dir(category), release.annotation_dir(category), release.cad_dir(category)]
    if layout.is_synthetic(occ.root):
        targets += [d for lv in constants.OCCLUSION_LEVELS for d in (occ.image_dir(category, lv),
                                                                       occ.mask_dir(category, lv))]
    for t in targets:
        if t.is_dir():
            shutil.rmtree(t)


def generate(dataroot: str | Path, categories: list[str], config: SyntheticConfig,
             overwrite: bool = False, progress: bool = True) -> dict[str, dict[str, int]]:
    """Generate (or complete) the synthetic PASCAL3D+ for ``categories``.

    Idempotent: a category listed as done in the marker (same settings) is skipped. A
    marker with other settings raises :class:`SyntheticMismatch` unless ``overwrite``,
    which regenerates the requested categories from scratch.

    Returns:
        {category: {"train": n, "val": n, "occluded": n, "skipped": 0 or 1}}.
    Raises:
        RuntimeError when ``dataroot`` holds a real (unmarked) PASCAL3D+.
    """
    dataroot = Path(dataroot)
    release_dir = layout.release_root(dataroot)
    if release_dir.exists() and any(release_dir.iterdir()) and not layout.is_synthetic(release_dir):
        raise RuntimeError(f"{release_dir} holds a real PASCAL3D+ (no {layout.SYNTHETIC_MARKER}); "
                           "refusing to write synthetic data into it")
    marker = read_marker(dataroot)
    done: set[str] = set()
    if marker is not None:
        if marker.get("config") != config.marker():
            if not overwrite:
                raise SyntheticMismatch(
                    f"{release_dir} holds a synthetic dataset made with other settings "
                    f"({marker.get('config')}); use overwrite (OVERWRITE=yes) or another data root")
        else:
            done = set(marker.get("categories", []))
        occ_marker = layout.occluded_root(dataroot) / layout.SYNTHETIC_MARKER
        if config.occluded and not occ_marker.is_file():
            done = set()  # occluded part never written with these settings
    release = Pascal3DRelease(release_dir)
    occluded = OccludedRelease(layout.occluded_root(dataroot))
    write_markers(dataroot, config, sorted(done))   # mark first: a partial folder is still marked
    summary: dict[str, dict[str, int]] = {}
    for category in categories:
        if category in done and not overwrite:
            log.info("synthetic %s: already generated, skipped", category)
            summary[category] = {"train": config.n_train, "val": config.n_val,
                                 "occluded": config.n_val * len(constants.OCCLUSION_LEVELS) if config.occluded else 0,
                                 "skipped": 1}
            continue
        start = time.time()
        _remove_category(dataroot, category)
        models = cad_models(category, config)
        for i, m in enumerate(models):
            mesh.save_off(release.cad_dir(category) / f"{i + 1:02d}.off", m.verts, m.faces)
        save_cad_mat(release.root / "CAD" / f"{category}.mat", category, models)
        atomic_write_text(release.subtype_path(category), "".join(f"{s}\n" for s in constants.SUBTYPE_NAMES[category]))
        n_occ = 0
        for split, count in (("train", config.n_train), ("val", config.n_val)):
            names = []
            for i in progress_bar(range(count), desc=f"synthetic {category} {split}", leave=False,
                                  disable=not progress):
                name = image_name(category, split, i)
                image, record, rendered = generate_image(category, split, i, models, config)
                rng = item_rng(config.seed, category, split, i, stream=1)   # noise and occluders
                save_jpeg(release.image_path(category, name), _to_uint8(image, rng, config.noise_sigma),
                          config.jpeg_quality)
                save_record(release.annotation_path(category, name), record, category,
                            source="synthetic (nemopose)", database="synthetic")
                names.append(name)
                if split == "val" and config.occluded:
                    for level in constants.OCCLUSION_LEVELS:
                        occ_img, occ_mask, _ = paste_occluders(rng, image, rendered.mask,
                                                               constants.OCCLUSION_FG_RANGES[level])
                        save_jpeg(occluded.image_path(category, level, name),
                                  _to_uint8(occ_img, rng, config.noise_sigma), config.jpeg_quality)
                        atomic_savez(occluded.mask_path(category, level, name), compressed=True,
                                     occluder_mask=occ_mask)
                        n_occ += 1
            atomic_write_text(release.image_set_path(category, split), "".join(f"{n}\n" for n in names))
        done.add(category)
        write_markers(dataroot, config, sorted(done))
        summary[category] = {"train": config.n_train, "val": config.n_val, "occluded": n_occ, "skipped": 0}
        log.info("synthetic %s: %d train, %d val, %d occluded images in %.1f s", category, config.n_train,
                 config.n_val, n_occ, time.time() - start)
    return summary


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the synthetic PASCAL3D+ (METHOD.md §14). "
                                     "It is marked as synthetic and must never be reported as PASCAL3D+.")
    parser.add_argument("--dataroot", default="data", help="data root (default: data)")
    add_categories_argument(parser, "all 12")
    parser.add_argument("--size", default="demo", choices=sorted(PRESETS), help="size preset (default: demo)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--no-occluded", action="store_true", help="skip the occluded levels (default: write them)")
    parser.add_argument("--overwrite", action="store_true", help="regenerate existing categories (default: no)")
    args = parser.parse_args(argv)
    setup_logging()
    torch.set_num_threads(1)  # small tensors: one thread is fastest (see PrepareConfig.threads)
    config = replace(preset(args.size, args.seed), occluded=not args.no_occluded)
    generate(args.dataroot, constants.parse_categories(args.categories), config, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
