"""What the training loop iterates (METHOD.md §9, §15): keyed randomness, each mesh's global batches,
and one data loader over all meshes of a category.

Randomness is keyed, not streamed: the shuffling of each (epoch, mesh) and the clutter cells of
each (epoch, mesh, sample) come from seeds derived from the run's ``seed``
(:func:`derived_seed`), so a run is reproducible, independent of the number of ranks and of
data-loader workers, and resumable exactly.

One loader per category, built once per run (:func:`build_loader`):
:class:`EpochBatchSampler` chains the meshes' :class:`GlobalBatchSampler` s, mesh after mesh
as the original's loop over meshes, and :class:`TrainingSamples` turns each
:class:`SampleKey` (mesh, index, epoch) into a sample with its vertex and clutter cells. So

- the workers start once per run (``persistent_workers``), not once per mesh and epoch, and
  they prefetch across the boundaries between meshes;
- the per-sample work (JPEG decoding, clutter sampling: ~1 ms per image on one core) runs in
  the workers, while the accelerator trains, instead of between steps in the main process;
- images travel as uint8, 4x fewer bytes through shared and pinned memory; the training
  step normalises them on the device.

The sampler runs in the main process and puts the epoch into every key, so persistent
workers never work with a stale epoch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data import layout
from ..data.datasets import TrainingDataset, mesh_list_path
from ..distributed import DistContext
from ..mesh import load_off
from .model import STRIDE, sample_clutter_index, vertex_cell_index
from .config import TrainConfig

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- keyed randomness


def derived_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys (stable across processes and platforms)."""
    lo, hi = (int(v) for v in np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32))
    return (lo | (hi << 32)) & ((1 << 63) - 1)


# First key of each seed, so that the streams of different uses never coincide.
TAG_SHUFFLE, TAG_CLUTTER, TAG_BANK = 1, 2, 3


class SampleKey(NamedTuple):
    """What the loader asks a worker for: sample ``index`` of mesh ``mesh`` (1-based) in ``epoch``."""

    mesh: int
    index: int
    epoch: int


# ----------------------------------------------------------------------------- samplers


class GlobalBatchSampler(Sampler[list[int]]):
    """Shuffled global batches of one mesh's dataset; each rank takes its contiguous chunk.

    Global batch k of epoch e is ``perm_e[k*B:(k+1)*B]`` with ``perm_e`` drawn from a seed of
    (seed, epoch, mesh); rank r gets chunk r of ``tensor_split(world)``, so concatenating
    the ranks' batches in rank order gives back the global batch (what the bank update sees).
    The last, smaller global batch is kept (as the original's drop_last=False) unless it has
    fewer images than ranks.
    """

    def __init__(self, size: int, batch_size: int, ctx: DistContext, seed: int, mesh_index: int,
                 shuffle: bool = True):
        if batch_size < ctx.world_size:
            raise ValueError(f"global batch {batch_size} is smaller than the {ctx.world_size} ranks")
        self.size, self.batch_size, self.ctx = size, batch_size, ctx
        self.seed, self.mesh_index, self.shuffle = seed, mesh_index, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[torch.Tensor]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(derived_seed(self.seed, TAG_SHUFFLE, self.epoch, self.mesh_index))
            perm = torch.randperm(self.size, generator=gen)
        else:
            perm = torch.arange(self.size)
        batches = list(torch.split(perm, self.batch_size))
        return [b for b in batches if len(b) >= self.ctx.world_size]

    def __iter__(self):
        for batch in self.global_batches():
            yield batch.tensor_split(self.ctx.world_size)[self.ctx.rank].tolist()

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        return full + (1 if rest >= self.ctx.world_size else 0)


class EpochBatchSampler(Sampler[list[SampleKey]]):
    """This rank's batches of one epoch over all meshes, mesh after mesh (in the order of
    ``samplers``), each a list of :class:`SampleKey`. Every batch holds one mesh's samples."""

    def __init__(self, samplers: dict[int, GlobalBatchSampler]):
        self.samplers = samplers
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called in the main process before each epoch's ``iter(loader)``."""
        self.epoch = epoch
        for sampler in self.samplers.values():
            sampler.set_epoch(epoch)

    def __iter__(self):
        for mesh, sampler in self.samplers.items():
            for batch in sampler:
                yield [SampleKey(mesh, index, self.epoch) for index in batch]

    def __len__(self) -> int:
        return sum(len(s) for s in self.samplers.values())


# ----------------------------------------------------------------------------- samples


class TrainingSamples(Dataset):
    """The training samples of all meshes of a category, addressed by :class:`SampleKey`.

    Args:
        datasets: ``{mesh index (1-based): TrainingDataset}``.
        num_noise: clutter cells per image.
        seed: the run's seed (clutter cells of a sample: seed, epoch, mesh, index).

    Each item is a dict: ``image`` uint8 ``(3, H, W)`` (not normalised),
    ``vertex_pixels`` float32 ``(nV, 2)``, ``weights`` float32 ``(nV,)``, ``vertex_index``
    long ``(nV,)`` and ``clutter_index`` long ``(num_noise,)`` (flat stride-8 cells, see
    :func:`nemopose.train.model.vertex_cell_index`), ``mesh``, ``index`` (ints), ``name``.
    """

    def __init__(self, datasets: dict[int, TrainingDataset], num_noise: int, seed: int):
        for mesh, ds in datasets.items():
            if ds.image_size[0] % STRIDE or ds.image_size[1] % STRIDE:
                raise ValueError(f"{ds.list_path}: image size {ds.image_size} is not a multiple of the "
                                 f"stride {STRIDE}")
        self.datasets, self.num_noise, self.seed = datasets, num_noise, seed

    def __len__(self) -> int:
        return sum(len(ds) for ds in self.datasets.values())

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        mesh, index, epoch = key
        ds = self.datasets[mesh]
        height, width = ds.image_size
        pixels, weights = ds.vertices(index)
        vertex_index = vertex_cell_index(pixels[None], (height, width))                  # (1, nV)
        clutter_index = sample_clutter_index(vertex_index, (height // STRIDE) * (width // STRIDE), self.num_noise,
                                             seeds=[derived_seed(self.seed, TAG_CLUTTER, epoch, mesh, index)])
        return {"image": ds.image(index), "vertex_pixels": pixels, "weights": weights,
                "vertex_index": vertex_index[0], "clutter_index": clutter_index[0],
                "mesh": mesh, "index": index, "name": ds.names[index]}


# ----------------------------------------------------------------------------- per category


@dataclass
class MeshData:
    """One mesh of the category: its index (1-based), vertex count and dataset (None: no images)."""

    index: int
    num_vertices: int
    dataset: TrainingDataset | None


def build_meshes(config: TrainConfig) -> tuple[list[MeshData], layout.DatasetInfo]:
    """The datasets of every mesh of the category; returns them and the dataset's info."""
    mesh_paths = layout.cuboid_paths(config.dataroot, config.mesh_d, config.category)
    split = layout.split_layout(config.dataroot, "train", config.category)
    info = layout.load_dataset_info(split.root)
    meshes = []
    for i, mesh_path in enumerate(mesh_paths, start=1):
        num_vertices = load_off(mesh_path)[0].shape[0]
        list_path = mesh_list_path(split, config.mesh_d, i, config.azimuth_bins)
        if not list_path.is_file() or not layout.read_list(list_path):
            # As the original: a mesh without training images keeps its (initial) bank.
            log.warning("%s mesh%02d: no training images (%s); its bank stays untrained", config.category, i, list_path)
            meshes.append(MeshData(i, num_vertices, None))
            continue
        dataset = TrainingDataset(config.dataroot, config.category, config.mesh_d, i,
                                  vertex_weights=config.vertex_weights, cache_images=config.cache_images,
                                  azimuth_bins=config.azimuth_bins)
        if dataset.num_vertices != num_vertices:
            raise ValueError(f"{list_path}: annotations have {dataset.num_vertices} vertices but {mesh_path} has "
                             f"{num_vertices}; re-run the preparation for this mesh")
        meshes.append(MeshData(i, num_vertices, dataset))
    if all(m.dataset is None for m in meshes):
        raise FileNotFoundError(f"no training images for {config.category} in {split.lists3d(config.mesh_d)}; "
                                "run PrepareData.sh first")
    return meshes, info


def build_loader(meshes: list[MeshData], config: TrainConfig, ctx: DistContext) -> DataLoader:
    """The one loader of a category's training: built once, iterated once per epoch after
    ``loader.batch_sampler.set_epoch(epoch)``. With ``config.workers > 0`` its workers persist
    across epochs and each keeps ``config.prefetch_factor`` batches ready; on CUDA the batches
    come in pinned memory (asynchronous copies)."""
    with_images = [m for m in meshes if m.dataset is not None]
    samplers = {m.index: GlobalBatchSampler(len(m.dataset), config.batch_size, ctx, config.seed, m.index)
                for m in with_images}
    samples = TrainingSamples({m.index: m.dataset for m in with_images}, config.num_noise, config.seed)
    workers = config.workers
    return DataLoader(samples, batch_sampler=EpochBatchSampler(samplers), num_workers=workers,
                      pin_memory=ctx.device.type == "cuda", persistent_workers=workers > 0,
                      prefetch_factor=config.prefetch_factor if workers > 0 else None)
