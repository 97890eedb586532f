"""One training step (plain or SAM), one epoch, evaluation over a loader, and the loaders."""
from __future__ import annotations

import math
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..device import hardware, native_bf16
from ..errors import DataError, NonFiniteError
from .distributed import Dist
from .metrics import EvalResult
from .sam import SAM


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


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: Optimisation,
               amp: bool, d: Dist | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy, backward and an optimiser step (SAM: a second forward/backward at the
    perturbed weights). Returns the loss and logits of the first forward pass. A non-finite
    loss (of either pass) raises NonFiniteError before the optimiser steps."""
    with autocast(x.device, amp):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    check_finite(loss, d, "loss")
    opt.base.zero_grad(set_to_none=True)
    loss.backward()
    if opt.sam:
        opt.sam.first_step()
        opt.base.zero_grad(set_to_none=True)
        with autocast(x.device, amp):
            perturbed = F.cross_entropy(model(x).float(), y)
        check_finite(perturbed, d, "loss at SAM's perturbed weights")
        perturbed.backward()
        opt.sam.second_step()
    else:
        opt.base.step()
    return loss.detach(), logits.detach()


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


def train_epoch(model: nn.Module, loader: Iterable, steps: int, opt: Optimisation, d: Dist,
                amp: bool, desc: str) -> tuple[float, float]:
    """`steps` training steps over the loader; (mean loss, accuracy) over all ranks."""
    from tqdm import tqdm

    model.train()
    stats = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, seen
    bar = tqdm(batches(loader), total=steps, desc=desc, leave=False, disable=not d.main or None,
               file=sys.stderr)
    for step, (x, y) in enumerate(bar):
        if step == steps:
            break
        x, y = x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)
        try:
            loss, logits = train_step(model, x, y, opt, amp, d)
        except NonFiniteError as err:
            raise NonFiniteError(f"{err} at {desc}, step {step + 1}") from None
        stats += torch.tensor([loss.item() * len(y), (logits.argmax(1) == y).sum().item(), len(y)],
                              dtype=torch.float64)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    stats = d.all_sum(stats.to(d.device)).cpu()
    if not stats[2]:
        raise RuntimeError(f"{desc}: no training batch was drawn")
    return float(stats[0] / stats[2]), float(stats[1] / stats[2])


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
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch, sampler=sampler, num_workers=workers,
        pin_memory=d.device.type == "cuda", persistent_workers=workers > 0)


def eval_loader(dataset: torch.utils.data.Dataset, batch: int, workers: int,
                d: Dist) -> torch.utils.data.DataLoader:
    """Each rank gets every world-th image: no padding, so summed counts are exact."""
    shard = torch.utils.data.Subset(dataset, range(d.rank, len(dataset), d.world))
    return torch.utils.data.DataLoader(shard, batch_size=batch, num_workers=workers,
                                       pin_memory=d.device.type == "cuda")
