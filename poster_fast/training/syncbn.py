"""BatchNorm whose training statistics are those of the whole global batch, across DDP ranks.

torch.nn.SyncBatchNorm runs on GPUs only; this one runs wherever the process group does (gloo
on the CPU, NCCL on GPUs), so that the same code is tested here and used there. Forward: the
per-channel mean, then the variance of the global batch, from two all-reduces; backward: the
gradient of the sum of every rank's loss, from one all-reduce (DDP then averages the parameters'
gradients over ranks, as for torch's SyncBatchNorm). Statistics are computed in float32.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def _channel_dims(x: torch.Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def _per_channel(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.view(1, -1, *([1] * (x.dim() - 2)))


class _SyncBatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        dims, xf = _channel_dims(x), x.float()
        local = torch.cat([xf.sum(dims), xf.new_tensor([xf.numel() // xf.shape[1]])])
        dist.all_reduce(local)
        count = local[-1]
        mean = local[:-1] / count
        centered = xf - _per_channel(mean, x)
        squares = centered.square().sum(dims)
        dist.all_reduce(squares)
        var = squares / count
        invstd = torch.rsqrt(var + eps)
        xhat = centered * _per_channel(invstd, x)
        y = xhat * _per_channel(weight.float(), x) + _per_channel(bias.float(), x)
        ctx.save_for_backward(xhat, weight, invstd, count)
        ctx.mark_non_differentiable(mean, var, count)
        return y.to(x.dtype), mean, var, count

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        xhat, weight, invstd, count = ctx.saved_tensors
        dims, g = _channel_dims(grad_y), grad_y.float()
        sum_g, sum_g_xhat = g.sum(dims), (g * xhat).sum(dims)
        both = torch.cat([sum_g, sum_g_xhat])
        dist.all_reduce(both)
        channels = sum_g.numel()
        grad_x = _per_channel(weight.float() * invstd, g) * (
            g - _per_channel(both[:channels] / count, g) - xhat * _per_channel(both[channels:] / count, g))
        return grad_x.to(grad_y.dtype), sum_g_xhat.to(weight.dtype), sum_g.to(weight.dtype), None


class SyncBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d (same parameters, buffers and state-dict keys) whose training-mode
    statistics are the global batch's when a process group of several ranks is running."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        y, mean, var, count = _SyncBatchNormFunction.apply(x, self.weight, self.bias, self.eps)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
            unbiased = var * count / (count - 1).clamp(min=1)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return y


def sync_batchnorm(module: nn.Module) -> int:
    """Replace, in place, every trainable affine BatchNorm2d of `module` (parameters with
    requires_grad, running statistics tracked) by a SyncBatchNorm2d holding the same tensors;
    frozen ones (POSTER's landmark network) stay as they are. Returns how many were replaced."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.BatchNorm2d and child.affine and child.track_running_stats \
                    and child.weight.requires_grad:
                sync = SyncBatchNorm2d(child.num_features, child.eps, child.momentum)
                sync.weight, sync.bias = child.weight, child.bias
                for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                    setattr(sync, buffer, getattr(child, buffer))
                sync.train(child.training)
                setattr(parent, name, sync)
                replaced += 1
    return replaced
