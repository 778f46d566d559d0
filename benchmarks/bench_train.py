"""Training throughput: the data loader, the bare training step in fp32 and bf16, and whole
epochs as TrainNeMo runs them, in images/s, measured in one run.

Rows (all on the same fake prepared car data at ``--size``, written to a temporary folder by
tests/fakedata.py, the one writer of fake prepared data; its noisy JPEGs decode somewhat
slower than real crops, so the loader row is a conservative figure):

- ``loader``: the training loader alone (nemopose.train.loader.build_loader: ``--workers``
  persistent workers, uint8 batches, pinned on CUDA), a warm epoch of ``--loader-batches``
  batches after one epoch that starts the workers;
- ``step <precision>``: nemopose.train.loop.training_step + backward + Adam step on one batch
  already in memory (forward, loss, bank update; the host-to-device copy included);
- ``epoch <precision> cold``: nemopose.train.loop.train_one_epoch over ``--iterations`` batches
  with a fresh loader (its workers start here, once per run);
- ``epoch <precision> warm``: the next epoch (persistent workers, the steady state).

Columns: ``vs step fp32`` = images/s relative to the fp32 step; ``vs bare step`` = an epoch
row relative to the step row of its precision (1.0 = the loop adds nothing to the step).
The settings are the faithful ones (bank with 5 x ``--max-group`` clutter rows, Adam,
backbone ``--backbone`` from random initialisation, an optimiser step every iteration).

Run: bash benchmarks/run.sh bench_train.py                 # small CPU defaults (light backbone)
     bash benchmarks/run.sh bench_train.py --device cuda --batch 108 --size 256x672 --iterations 10 --warmup 3
On a shared CPU set OMP_WAIT_POLICY=PASSIVE, as TrainNeMo.sh does (spinning OpenMP threads
make the steps several times slower whenever the loader workers run).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import tempfile
import time
from pathlib import Path

import torch

from common import REPO, environment_line, print_table
from nemopose import constants
from nemopose.data import layout
from nemopose.data.datasets import TrainingDataset
from nemopose.distributed import DistContext
from nemopose.train.precision import PRECISIONS, check_precision
from nemopose.experiment import Experiment
from nemopose.train.loop import TrainingRun, build_banks, build_model, train_one_epoch, training_step
from nemopose.train.config import TrainConfig, TrainState, effective_distance_thr
from nemopose.train.loader import MeshData, build_loader, build_meshes

DISTINCT_IMAGES = 64      # fake images written; longer lists repeat them (decoding cost is the same)


def load_fakedata():
    """tests/fakedata.py, imported from its file (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("fakedata", REPO / "tests" / "fakedata.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_size(text: str) -> tuple[int, int, float]:
    """'HxW' -> (H, W, image scale); the size must be the car crop at some scale."""
    height, width = (int(v) for v in text.lower().split("x"))
    scale = height / constants.image_size("car", 1.0)[0]
    if constants.image_size("car", scale) != (height, width):
        raise SystemExit(f"--size {text}: not the car crop at any scale (256x672 at scale 1, 128x336 at 0.5)")
    return height, width, scale


def write_data(root: Path, scale: float, vertices: int, list_lengths: dict[int, int]) -> None:
    """A fake prepared car dataset; mesh list k holds ``list_lengths[k]`` entries (the distinct
    images repeated). Only cuboid 01 exists, so training sees the list of mesh 1 alone."""
    distinct = min(DISTINCT_IMAGES, max(list_lengths.values()))
    load_fakedata().make_fake_dataset(root, categories=("car",), n_train=distinct, n_val=1, scale=scale,
                                      n_vertices=vertices)
    split = layout.split_layout(root, "train", "car")
    names = layout.read_list(split.mesh_list_path("single", 1))
    for mesh_index, length in list_lengths.items():
        layout.write_list(split.mesh_list_path("single", mesh_index),
                          [names[i % len(names)] for i in range(length)])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh_training(config: TrainConfig, meshes: list[MeshData], device: torch.device):
    torch.manual_seed(config.seed)
    model = build_model(config, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return model.train(), build_banks(config, meshes, device), optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--backbone", default="auto", choices=("auto", "resnetext", "light"),
                        help="network (default auto: resnetext, the faithful one, on CUDA; light on the CPU, "
                             "where ResNet-50 at 256x672 takes seconds per image)")
    parser.add_argument("--batch", type=int, default=2, help="images per step (default 2; the faithful 108 on a GPU)")
    parser.add_argument("--size", default="256x672", help="crop HxW, the car at some scale (default 256x672, real)")
    parser.add_argument("--iterations", type=int, default=2,
                        help="timed steps per step row, and batches per epoch (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before each step row (default 1)")
    parser.add_argument("--workers", type=int, default=TrainConfig.workers,
                        help=f"loader workers (default {TrainConfig.workers}, TrainConfig's)")
    parser.add_argument("--loader-batches", type=int, default=0,
                        help="batches in the loader row's epoch (default 0: twice the workers, at least 4)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS),
                        help=f"precisions to compare, first = baseline (default {','.join(PRECISIONS)})")
    parser.add_argument("--vertices", type=int, default=1024, help="cuboid vertices asked of the fake data's cuboid generator (default 1024, the car's; "
                             "the table shows the count it makes)")
    parser.add_argument("--max-group", type=int, default=TrainConfig.max_group,
                        help=f"clutter queue length / 5 (default {TrainConfig.max_group}, faithful)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    title, header, table = measure(torch.device(args.device), backbone=args.backbone, batch=args.batch,
                                   size=args.size, iterations=args.iterations, warmup=args.warmup,
                                   workers=args.workers, loader_batches=args.loader_batches,
                                   precisions=args.precisions.split(","), vertices=args.vertices,
                                   max_group=args.max_group)
    print_table(title, header, table)


def measure(device: torch.device, *, backbone: str = "auto", batch: int = 2, size: str = "256x672",
            iterations: int = 2, warmup: int = 1, workers: int = TrainConfig.workers, loader_batches: int = 0,
            precisions: list[str] = list(PRECISIONS), vertices: int = 1024,
            max_group: int = TrainConfig.max_group) -> tuple[str, list[str], list[list[object]]]:
    """The rows of the table (see the module docstring): (title, header, rows)."""
    backbone = backbone if backbone != "auto" else "resnetext" if device.type == "cuda" else "light"
    for precision in precisions:
        check_precision(precision, device)
    height, width, scale = parse_size(size)
    loader_batches = loader_batches or max(4, 2 * workers)
    ctx = DistContext(device=device)

    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp)
        write_data(root, scale, vertices, {1: batch * iterations, 2: batch * loader_batches})
        base = TrainConfig(dataroot=str(root), exproot=str(root / "exp"), backbone=backbone,
                           pretrained="random", batch_size=batch, max_group=max_group,
                           accumulate=1, accumulation="aligned", workers=workers)
        meshes, info = build_meshes(base)
        nv = meshes[0].num_vertices
        distance_thr = effective_distance_thr(base, info.image_scale)
        rows: list[list[object]] = []

        def add(name, precision, images, seconds, reference=None):
            rows.append([name, precision, images, f"{seconds:.2f}", images / seconds, reference])

        # (a) the loader alone: one epoch starts the workers, the next is timed
        loader = build_loader([MeshData(2, nv, TrainingDataset(root, "car", mesh_index=2))], base, ctx)
        for epoch in (0, 1):
            loader.batch_sampler.set_epoch(epoch)
            start, images = time.perf_counter(), 0
            for data in loader:
                images += len(data["index"])
            seconds = time.perf_counter() - start
        add(f"loader ({workers} workers, warm)", "-", images, seconds)
        del loader

        step_ips: dict[str, float] = {}
        for precision in precisions:
            config = dataclasses.replace(base, precision=precision)
            # (b) the bare step on a batch in memory
            model, banks, optimizer = fresh_training(config, meshes, device)
            data = next(iter(build_loader(meshes, dataclasses.replace(config, workers=0), ctx)))
            if device.type == "cuda":
                data = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in data.items()}

            def step():
                loss, _ = training_step(model, banks[0], data, config, ctx, distance_thr)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()

            for _ in range(warmup):
                step()
            synchronize(device)
            start = time.perf_counter()
            for _ in range(iterations):
                step()
            synchronize(device)
            seconds = time.perf_counter() - start
            step_ips[precision] = batch * iterations / seconds
            add(f"step {precision}", precision, batch * iterations, seconds)

            # (c) whole epochs as TrainNeMo runs them (fresh network, its own loader)
            model, banks, optimizer = fresh_training(config, meshes, device)
            run = TrainingRun(config, ctx, Experiment(config.exproot, config.mesh_d), meshes, info, distance_thr,
                              model, model, banks, optimizer, TrainState(), build_loader(meshes, config, ctx))
            for epoch, label in ((0, "cold"), (1, "warm")):
                start = time.perf_counter()
                stats = train_one_epoch(run, epoch)
                synchronize(device)
                seconds = time.perf_counter() - start
                if not math.isfinite(stats["loss"]):
                    raise SystemExit(f"non-finite loss in the {precision} epoch")
                add(f"epoch {precision} {label}", precision, stats["images"], seconds, step_ips[precision])
            del run

    baseline = step_ips[precisions[0]]
    table = [[name, prec, images, secs, f"{ips:.2f}", f"{ips / baseline:.2f}x",
              "-" if ref is None else f"{ips / ref:.2f}x"] for name, prec, images, secs, ips, ref in rows]
    return (f"Training throughput, {backbone} at {height}x{width}, batch {batch}, car cuboid "
            f"({nv} vertices), {5 * max_group} clutter rows, {device} ({environment_line()})",
            ["row", "precision", "images", "s", "images/s", f"vs step {precisions[0]}", "vs bare step"], table)




if __name__ == "__main__":
    main()
