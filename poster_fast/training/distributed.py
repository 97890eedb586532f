"""One process, or one of several under torchrun (DistributedDataParallel), on one node or more."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..device import default_device


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    nodes: int = 1  # torchrun's node groups (--nnodes)
    restart: int | None = None  # torchrun's restart count of this worker group (None: not under torchrun)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on any rank (every rank gets the same answer)."""
        if self.world == 1:
            return flag
        return bool(self.all_sum(torch.tensor([float(flag)], device=self.device)).item())

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` (picklable), in rank order, on rank 0; None on the others."""
        if self.world == 1:
            return [obj]
        objects: list[Any] | None = [None] * self.world if self.main else None
        dist.gather_object(obj, objects, dst=0)
        return objects

    def same_everywhere(self, values: list[float]) -> bool:
        """Whether every rank passed the same numbers."""
        if self.world == 1:
            return True
        mine = torch.tensor(values, dtype=torch.float64, device=self.device)
        low, high = mine.clone(), mine.clone()
        dist.all_reduce(low, dist.ReduceOp.MIN)
        dist.all_reduce(high, dist.ReduceOp.MAX)
        return bool(torch.equal(low, high))

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
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available() and device != "cpu"
    if cuda:
        torch.cuda.set_device(local)
    backend = "nccl" if cuda else "gloo"
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and restart is not None:
        dist.init_process_group(backend, store=attempt_store(restart), rank=rank, world_size=world)
    else:
        dist.init_process_group(backend)
    nodes = int(os.environ.get("GROUP_WORLD_SIZE") or max(1, world // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    return Dist(dist.get_rank(), world, torch.device("cuda", local) if cuda else torch.device("cpu"), nodes,
                None if restart is None else int(restart))


def attempt_store(restart: str) -> dist.Store:
    """The torchrun agent's key-value store, under a prefix of its own for each restart.

    torchrun's workers join their process group through the agent's store, and it keeps the keys
    of earlier attempts: a restarted worker may read the address a killed peer published and fail
    ("Gloo connectFullMesh failed ... Connection refused"). Fresh keys for each attempt avoid that
    (tests/test_train_restarts.py restarts groups this way on one node and on two)."""
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          timeout=timedelta(minutes=30))
    return dist.PrefixStore(f"poster_fast/attempt_{restart}", store)


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
