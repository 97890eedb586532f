"""One process, or one of several under torchrun (DistributedDataParallel)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..device import default_device


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            dist.destroy_process_group()


def setup_dist(device: str | None) -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: join the process group (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=default_device(device))
    local = int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available() and device != "cpu"
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), world, torch.device("cuda", local) if cuda else torch.device("cpu"))


def wrap_ddp(net: nn.Module, d: Dist) -> nn.Module:
    """The module to train: `net` itself, or DDP around it. Only parameters with requires_grad
    are synchronised (the frozen landmark net is not)."""
    if d.world == 1:
        return net
    return nn.parallel.DistributedDataParallel(
        net, device_ids=[d.device.index] if d.device.type == "cuda" else None)


def broadcast_buffers(net: nn.Module, d: Dist) -> None:
    """Rank 0's buffers to all: DDP syncs BN statistics before each forward, not after the last."""
    if d.world > 1:
        for buf in net.buffers():
            dist.broadcast(buf, 0)


def in_sync(model: nn.Module, d: Dist) -> bool:
    """Whether every rank holds the same parameters and buffers (per-tensor float64 sums)."""
    if d.world == 1:
        return True
    sums = torch.stack([t.detach().double().sum() for t in model.state_dict().values()]).to(d.device)
    gathered = [torch.empty_like(sums) for _ in range(d.world)]
    dist.all_gather(gathered, sums)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])
