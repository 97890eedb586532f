"""One training step (plain or SAM, on one batch or accumulated micro-batches), an epoch's steps,
evaluation over a loader, and the loaders."""
from __future__ import annotations

import itertools
import math
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..device import hardware, native_bf16
from ..errors import DataError, NonFiniteError
from .distributed import Dist
from .metrics import EvalResult
from .sam import SAM
from .stopping import ignore_sigterm


@dataclass
class Optimisation:
    """The base optimiser (its state is what checkpoints hold), SAM around it or not, and the
    per-epoch learning-rate schedule."""

    base: torch.optim.Optimizer
    sam: SAM | None
    scheduler: torch.optim.lr_scheduler.LRScheduler

    @classmethod
    def create(cls, params: list[torch.Tensor], name: str, lr: float, weight_decay: float,
               rho: float, gamma: float) -> "Optimisation":
        """name: adam, adamw, sam-adam or sam-adamw."""
        base_cls = torch.optim.AdamW if name.endswith("adamw") else torch.optim.Adam
        base = base_cls(params, lr=lr, weight_decay=weight_decay)
        sam = SAM(base, rho) if name.startswith("sam-") else None
        return cls(base, sam, torch.optim.lr_scheduler.ExponentialLR(base, gamma=gamma))

    @property
    def lr(self) -> float:
        return self.base.param_groups[0]["lr"]


def autocast(device: torch.device, amp: bool) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()


def amp_enabled(mode: str, device: torch.device) -> bool:
    """mode auto: bf16 autocast where the device computes bf16 natively (device.native_bf16: CUDA
    GPUs of compute capability 8.0 and newer, CPUs with AMX or AVX512-BF16); bf16: always; off: never."""
    if mode == "auto":
        return native_bf16(hardware(device))[0]
    return mode == "bf16"


def check_finite(loss: torch.Tensor, d: Dist | None, what: str) -> None:
    """NonFiniteError unless `loss` is finite on every rank (all ranks agree, so all stop)."""
    bad = (~torch.isfinite(loss.detach())).float().sum().reshape(1)
    if d is not None and d.world > 1:
        bad = d.all_sum(bad)
    if bad.item():
        value = loss.item()
        raise NonFiniteError(f"the {what} is {value}" if not math.isfinite(value)
                             else f"the {what} is not finite in another process")


def accumulate(model: nn.Module, micro: Sequence[tuple[torch.Tensor, torch.Tensor]], amp: bool,
               d: Dist | None, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward of the cross-entropy of the `micro`-batches taken as one batch: each one's summed
    loss over the images of all of them, its gradients added to `.grad`; under DDP the gradients
    are averaged over ranks once, with the last micro-batch. NonFiniteError if the loss is not
    finite on some rank (every rank raises). Returns the mean loss and the logits."""
    total = sum(len(y) for _, y in micro)
    loss, logits = torch.zeros((), device=micro[0][1].device), []
    for i, (x, y) in enumerate(micro):
        sync = i == len(micro) - 1 or not isinstance(model, nn.parallel.DistributedDataParallel)
        with nullcontext() if sync else model.no_sync():
            with autocast(x.device, amp):
                out = model(x)
            part = F.cross_entropy(out.float(), y, reduction="sum") / total
            part.backward()
        loss, logits = loss + part.detach(), logits + [out.detach()]
    check_finite(loss, d, what)
    return loss, torch.cat(logits)


def train_step(model: nn.Module, micro: Sequence[tuple[torch.Tensor, torch.Tensor]], opt: Optimisation,
               amp: bool, d: Dist | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on the `micro`-batches (gradient accumulation: as one batch of all
    their images): cross-entropy, backward, step (SAM: a second accumulation at the perturbed
    weights). Returns the loss and logits of the first pass. A non-finite loss (of either pass)
    raises NonFiniteError before the optimiser steps."""
    opt.base.zero_grad(set_to_none=True)
    loss, logits = accumulate(model, micro, amp, d, "loss")
    if opt.sam:
        opt.sam.first_step()
        opt.base.zero_grad(set_to_none=True)
        accumulate(model, micro, amp, d, "loss at SAM's perturbed weights")
        opt.sam.second_step()
    else:
        opt.base.step()
    return loss, logits


def batches(loader: Iterable) -> Iterator:
    """The loader's batches; a DataError raised in a worker process is re-raised as the one line
    the dataset wrote, without the worker's traceback that DataLoader wraps around it."""
    try:
        yield from loader
    except DataError as err:
        text = str(err)
        if "Original Traceback" in text:
            last = [line for line in text.splitlines() if line.strip()][-1]
            text = last.split("DataError: ", 1)[-1]
        raise DataError(text) from None


def train_steps(model: nn.Module, loader: Iterable, steps: range, accum: int, opt: Optimisation, d: Dist,
                amp: bool, stats: torch.Tensor, desc: str) -> Iterator[int]:
    """Training steps `steps` of an epoch, each on `accum` micro-batches of the loader (which
    starts where step steps.start begins; the epoch's last step may have fewer). Adds (loss sum,
    correct, seen) of this rank to `stats` and yields the number of steps done after each one."""
    from tqdm import tqdm

    model.train()
    source = batches(loader)
    bar = tqdm(steps, initial=steps.start, total=steps.stop, desc=desc, leave=False,
               disable=not d.main or None, file=sys.stderr)
    for step in bar:
        micro = [(x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True))
                 for x, y in itertools.islice(source, accum)]
        if not micro:
            raise RuntimeError(f"{desc}: no training batch was drawn for step {step + 1}")
        try:
            loss, logits = train_step(model, micro, opt, amp, d)
        except NonFiniteError as err:
            raise NonFiniteError(f"{err} at {desc}, step {step + 1}") from None
        labels = torch.cat([y for _, y in micro])
        stats += torch.tensor([loss.item() * len(labels), (logits.argmax(1) == labels).sum().item(), len(labels)],
                              dtype=torch.float64)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        yield step + 1


def epoch_result(stats: torch.Tensor, d: Dist, desc: str) -> tuple[float, float]:
    """(mean loss, accuracy) of an epoch over all ranks, from each rank's (loss sum, correct, seen)."""
    total = d.all_sum(stats.clone().to(d.device)).cpu()
    if not total[2]:
        raise RuntimeError(f"{desc}: no training batch was drawn")
    return float(total[0] / total[2]), float(total[1] / total[2])


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: Iterable, num_classes: int, d: Dist, amp: bool,
                   progress: bool = False) -> EvalResult:
    """Top-1 and confusion over the loader; under DDP each rank holds a disjoint shard of
    possibly unequal length, so `model` must be the bare module, not the DDP wrapper."""
    from tqdm import tqdm

    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    loss = torch.zeros((), dtype=torch.float64)
    for x, y in tqdm(batches(loader), desc="eval", leave=False, disable=not progress or None, file=sys.stderr):
        x, y = x.to(d.device, non_blocking=True), y.to(d.device)
        with autocast(d.device, amp):
            logits = model(x).float()
        loss += F.cross_entropy(logits, y, reduction="sum").double().cpu()
        confusion += torch.bincount((y * num_classes + logits.argmax(1)).cpu(),
                                    minlength=num_classes ** 2).view(num_classes, num_classes)
    both = d.all_sum(torch.cat([confusion.flatten(), loss.view(1)]).to(d.device)).cpu()
    confusion = both[:-1].view(num_classes, num_classes)
    return EvalResult(float(both[-1] / max(1.0, float(confusion.sum()))), confusion)


def train_loader(dataset: torch.utils.data.Dataset, sampler: Any, batch: int, workers: int,
                 d: Dist) -> torch.utils.data.DataLoader:
    """Batches in the sampler's order. The loader draws its workers' seeds from a generator of its
    own, not from torch's global one, which only the model draws from (drop path): a run resumed
    mid-epoch starts a loader where the uninterrupted run did not."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch, sampler=sampler, num_workers=workers, generator=torch.Generator(),
        pin_memory=d.device.type == "cuda", persistent_workers=workers > 0, worker_init_fn=ignore_sigterm)


def eval_loader(dataset: torch.utils.data.Dataset, batch: int, workers: int,
                d: Dist) -> torch.utils.data.DataLoader:
    """Each rank gets every world-th image: no padding, so summed counts are exact."""
    shard = torch.utils.data.Subset(dataset, range(d.rank, len(dataset), d.world))
    return torch.utils.data.DataLoader(shard, batch_size=batch, num_workers=workers, worker_init_fn=ignore_sigterm,
                                       pin_memory=d.device.type == "cuda")
