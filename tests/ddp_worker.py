"""Worker of the distributed-gradient test (imported by spawned processes)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from nemopose.train import loop as T, loader as train_data
from nemopose.train.bank import FeatureBank
from nemopose.distributed import DistContext
from nemopose.train.model import NeMoNet


def one_step(config: T.TrainConfig, ctx: DistContext) -> dict:
    """Forward + loss + bank update + backward of the first global batch; returns the
    gradients, the updated bank and the stats."""
    torch.manual_seed(0)
    model = NeMoNet(config.backbone, pretrained="random", light_widths=config.light_widths,
                    light_norm=config.light_norm)
    net = DistributedDataParallel(model) if ctx.distributed else model
    meshes, _ = train_data.build_meshes(config)
    batch = next(iter(train_data.build_loader(meshes, config, ctx)))
    bank = FeatureBank(meshes[0].num_vertices, max_group=config.max_group,
                       generator=torch.Generator().manual_seed(1))
    loss, stats = T.training_step(net, bank, batch, config, ctx, distance_thr=12.0)
    loss.backward()
    return {"grads": {k: p.grad.clone() for k, p in model.named_parameters()}, "memory": bank.memory.clone(),
            "stats": stats}


def worker(rank: int, world: int, port: int, config: T.TrainConfig, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = one_step(config, DistContext(rank=rank, world_size=world))
        torch.save(result, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()
