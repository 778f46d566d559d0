"""Training-step benchmark: images/s of forward + loss + bank update + backward + Adam step.

Settings (the training step of nemopose.train, on random data): the car cuboid (1024
vertices), vertex pixels drawn inside the image with half of them visible, 5 clutter cells
per image, a bank with 2560 clutter rows (max_group 512; --max-group 64 for the demo
preset's queue), 128-d features. Rows: the real car
size (256 x 672, resnetext) and the synthetic demo size (128 x 336, resnetext and the light
backbone). The ratio column is images/s relative to the first row measured in this run.
The "bank+loss" column is the time of the loss, bank update and their backward alone
(features given), per batch.

Run: bash benchmarks/run.sh bench_train.py [--rows ...] [--threads N]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F


from common import car_cuboid, environment_line, print_table, time_call
from nemopose.bank import FeatureBank, nemo_loss
from nemopose.model import NeMoNet, sample_clutter_index, vertex_cell_index

# name: (backbone, height, width, batch)
ROWS = {
    "demo-resnetext": ("resnetext", 128, 336, 4),
    "demo-light": ("light", 128, 336, 16),
    "real-resnetext": ("resnetext", 256, 672, 2),
    "real-light": ("light", 256, 672, 8),
}


def make_batch(batch: int, height: int, width: int, num_vertices: int, gen: torch.Generator):
    images = torch.randn(batch, 3, height, width, generator=gen)
    pixels = torch.stack([torch.randint(0, height, (batch, num_vertices), generator=gen),
                          torch.randint(0, width, (batch, num_vertices), generator=gen)], dim=-1).float()
    weights = (torch.rand(batch, num_vertices, generator=gen) > 0.5).float()
    vidx = vertex_cell_index(pixels, (height, width))
    cidx = sample_clutter_index(vidx, (height // 8) * (width // 8), 5, generator=gen)
    return images, pixels, weights, vidx, cidx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="demo-resnetext,demo-light,real-resnetext,real-light",
                        help=f"rows to run, first = baseline (choices {','.join(ROWS)}; default all)")
    parser.add_argument("--batch", type=int, default=0, help="override every row's batch size (default: per row)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, median reported (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--max-group", type=int, default=512,
                        help="clutter queue length / 5 (default 512, faithful; the demo preset uses 64)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    verts, _ = car_cuboid()
    nv = len(verts)
    gen = torch.Generator().manual_seed(0)
    rows, base = [], None
    for name in args.rows.split(","):
        backbone, height, width, batch = ROWS[name]
        batch = args.batch or batch
        torch.manual_seed(0)
        model = NeMoNet(backbone, pretrained="random").train()
        bank = FeatureBank(nv, 128, 5, args.max_group)
        optim = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
        images, pixels, weights, vidx, cidx = make_batch(batch, height, width, nv, gen)

        def step() -> None:
            feats = model(images, vidx, cidx)
            memory = bank.memory.clone()
            loss, _ = nemo_loss(feats, memory, nv, pixels, weights)
            bank.update(feats.detach(), weights)
            loss.backward()
            optim.step()
            optim.zero_grad()

        feats0 = F.normalize(torch.randn(batch, nv + 5, 128, generator=gen), dim=2)

        def bank_only() -> None:
            feats = feats0.clone().requires_grad_(True)
            loss, _ = nemo_loss(feats, bank.memory.clone(), nv, pixels, weights)
            bank.update(feats.detach(), weights)
            loss.backward()

        t_step = time_call(step, repeats=args.repeats, warmup=1)
        t_bank = time_call(bank_only, repeats=args.repeats, warmup=1)
        ips = batch / t_step
        base = base or ips
        rows.append([name, f"{height}x{width}", backbone, batch, f"{1000 * t_step:.0f}", f"{1000 * t_bank:.0f}",
                     f"{ips:.2f}", f"{ips / base:.2f}x"])
    print_table(f"Training step, car cuboid ({nv} vertices), {5 * args.max_group} clutter rows "
                f"({environment_line()})",
                ["row", "image", "backbone", "batch", "ms/batch", "bank+loss ms", "images/s", f"vs {rows[0][0]}"],
                rows)


if __name__ == "__main__":
    main()
