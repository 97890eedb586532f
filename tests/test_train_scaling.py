"""Gradient accumulation equals one larger batch (plain and SAM), SyncBatchNorm on two gloo
processes equals BatchNorm over the global batch, and an epoch's draws (order and augmentation
seeds) depend only on (seed, epoch, position): not on the number of processes, nor on where a
resumed epoch starts."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from poster_fast.data.sampler import BalancedSampler, ShuffledSampler
from poster_fast.data.transforms import TrainTransform
from poster_fast.training.steps import Optimisation, train_step
from poster_fast.training.syncbn import SyncBatchNorm2d, sync_batchnorm


def small_net() -> nn.Module:
    """No batch statistics: a batch's gradient is the sum of its images' (BatchNorm's is not)."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


@pytest.mark.parametrize("optimizer", ["adam", "sam-adamw"])
def test_accumulation_equals_one_larger_batch(optimizer):
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))
    nets = [small_net(), None]
    nets[1] = copy.deepcopy(nets[0])
    start = [p.detach().clone() for p in nets[0].parameters()]
    opts = [Optimisation.create(list(n.parameters()), optimizer, 1e-2, 1e-2, 0.05, 0.98) for n in nets]
    for _ in range(3):  # Adam's moments carry the steps' gradients forward
        whole, logits = train_step(nets[0], [(x, y)], opts[0], amp=False)
        accumulated, micro_logits = train_step(nets[1], [(x[i:i + 2], y[i:i + 2]) for i in range(0, 8, 2)],
                                               opts[1], amp=False)
        torch.testing.assert_close(accumulated, whole, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(micro_logits, logits, rtol=1e-6, atol=1e-6)
    for p, q, p0 in zip(nets[0].parameters(), nets[1].parameters(), start):
        assert not torch.equal(p, p0)
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)  # fp32 sums in another order


def sync_bn_rank(rank: int, world: int, folder: Path, x: torch.Tensor, g: torch.Tensor) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder / 'rdzv'}", rank=rank, world_size=world)
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
    net[0].requires_grad_(False)
    assert sync_batchnorm(net) == 1 and isinstance(net[1], SyncBatchNorm2d)
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-1, 1)
    shard = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
    xs = x[shard].clone().requires_grad_(True)
    y = net[1](xs)
    (y * g[shard]).sum().backward()
    grads = torch.cat([net[1].weight.grad, net[1].bias.grad])
    dist.all_reduce(grads)  # the parameters' gradient of the sum of every rank's loss
    torch.save({"y": y.detach(), "dx": xs.grad, "grads": grads, "mean": net[1].running_mean,
                "var": net[1].running_var}, folder / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def test_sync_batchnorm_two_gloo_processes_equals_the_global_batch(tmp_path):
    torch.manual_seed(0)
    x, g = torch.randn(6, 3, 4, 5) * 3 + 1, torch.randn(6, 3, 4, 5)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=sync_bn_rank, args=(r, 2, tmp_path, x, g)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # the reference: BatchNorm over the whole batch with the same affine parameters (same seed)
    torch.manual_seed(1)
    reference = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
    with torch.no_grad():
        reference[1].weight.uniform_(0.5, 1.5)
        reference[1].bias.uniform_(-1, 1)
    xr = x.clone().requires_grad_(True)
    y = reference[1](xr)
    (y * g).sum().backward()
    torch.testing.assert_close(torch.cat([r["y"] for r in got]), y.detach())
    torch.testing.assert_close(torch.cat([r["dx"] for r in got]), xr.grad)
    expected = torch.cat([reference[1].weight.grad, reference[1].bias.grad])
    for r in got:
        torch.testing.assert_close(r["grads"], expected)
        torch.testing.assert_close(r["mean"], reference[1].running_mean)
        torch.testing.assert_close(r["var"], reference[1].running_var)


def test_sync_batchnorm_keeps_frozen_layers_and_state_dict_keys():
    net = nn.Sequential(nn.BatchNorm2d(2), nn.BatchNorm2d(2), nn.BatchNorm2d(2, affine=False))
    net[1].requires_grad_(False)
    keys = net.state_dict().keys()
    assert sync_batchnorm(net) == 1
    assert [type(m) for m in net] == [SyncBatchNorm2d, nn.BatchNorm2d, nn.BatchNorm2d]
    assert net.state_dict().keys() == keys
    x = torch.randn(4, 2, 3, 3)
    torch.testing.assert_close(net[0](x), nn.functional.batch_norm(x, None, None, training=True))  # 1 process


@pytest.mark.parametrize("kind", ["shuffle", "balanced"])
def test_draws_depend_only_on_seed_epoch_and_position(kind):
    targets = [0] * 7 + [1] * 3

    def sampler(world: int, rank: int):
        if kind == "balanced":
            return BalancedSampler(targets, world, rank, seed=5)
        return ShuffledSampler(len(targets), world, rank, seed=5)
    one = sampler(1, 0)
    one.set_epoch(3)
    draws = list(one)
    shards = []
    for rank in range(2):
        s = sampler(2, rank)
        s.set_epoch(3)
        shards.append(list(s))
    assert [d for pair in zip(*shards) for d in pair] == draws  # dealt round-robin, same seeds
    one.set_epoch(3, start=4)
    assert list(one) == draws[4:] and len(one) == len(draws) - 4
    one.set_epoch(4)
    assert list(one) != draws
    assert len({d.seed for d in draws}) == len(draws)


def test_augmentation_depends_only_on_the_draws_seed():
    from PIL import Image

    img = Image.fromarray((torch.rand(40, 40, 3) * 255).to(torch.uint8).numpy())
    t = TrainTransform(32, 1.0, (0.02, 0.25))

    def augment(seed: int) -> torch.Tensor:
        return t(img, torch.Generator().manual_seed(seed))
    torch.manual_seed(0)
    a = augment(11)
    torch.manual_seed(1)  # the global generator plays no part
    assert torch.equal(augment(11), a)
    assert any(not torch.equal(augment(s), a) for s in (12, 13, 14))
