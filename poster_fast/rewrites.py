"""Rewrites of a POSTERV2 that compute the same function faster; `optimize()` applies them.

Kept-tensor rewrites (a model being trained sees the same parameters and buffers): 1x1 max-pool
shortcuts as strided slices, PyTorch's fused attention (SDPA) in the ViT, channels-last weights.
Inference only: BatchNorm folded into the preceding convolutions of both backbones.
"""
from __future__ import annotations

import torch
from torch import nn

from .model import POSTERV2
from .model.fusion_vit import Attention
from .model.ir50 import BottleneckIR
from .model.mobilefacenet import ConvBlock, LinearBlock

@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv computing bn(conv(x)) with bn's running statistics (eval-mode BatchNorm)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    fused.requires_grad_(conv.weight.requires_grad)
    return fused


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every conv -> BatchNorm pair of the landmark net / IR-50 blocks in place.

    The IR units' leading BatchNorm acts before a zero-padded conv, so folding it would change
    the border values: it is kept.
    """
    for block in module.modules():
        if isinstance(block, (ConvBlock, LinearBlock)):
            block.conv, block.bn = fold_conv_bn(block.conv, block.bn), nn.Identity()
        elif isinstance(block, BottleneckIR):
            res = block.res_layer
            res[3], res[4] = fold_conv_bn(res[3], res[4]), nn.Identity()
            if isinstance(block.shortcut_layer, nn.Sequential):
                sc = block.shortcut_layer
                sc[0], sc[1] = fold_conv_bn(sc[0], sc[1]), nn.Identity()
        elif isinstance(block, nn.Sequential) and len(block) == 3 and isinstance(block[1], nn.BatchNorm2d) \
                and isinstance(block[0], nn.Conv2d):  # IR-50 input layer: conv, BN, PReLU
            block[0], block[1] = fold_conv_bn(block[0], block[1]), nn.Identity()
    return module


class Subsample(nn.Module):
    """x[:, :, ::s, ::s]: what MaxPool2d(kernel 1, stride s) computes, without the pooling kernel."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::self.stride, ::self.stride]


def subsample_shortcuts(module: nn.Module) -> nn.Module:
    """Replace the IR units' 1x1 max-pool shortcuts by strided slicing (exact), in place."""
    for block in module.modules():
        if isinstance(block, BottleneckIR) and isinstance(block.shortcut_layer, nn.MaxPool2d):
            pool = block.shortcut_layer
            stride = pool.stride if isinstance(pool.stride, int) else pool.stride[0]
            block.shortcut_layer = Subsample(stride)
    return module


class OptimizedPOSTER(nn.Module):
    """Wraps the rewritten model: casts the input layout and runs under autocast if asked."""

    def __init__(self, model: POSTERV2, dtype: torch.dtype, channels_last: bool) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype == torch.float32:
            return self.model(x)
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.model(x)


def speed_up_in_place(model: POSTERV2, channels_last: bool = True) -> POSTERV2:
    """The rewrites that keep every parameter and buffer (checkpoints and optimizers see the same
    model): strided-slice shortcuts, SDPA in the ViT and, optionally, channels-last weights."""
    subsample_shortcuts(model.ir_back)
    for module in model.modules():
        if isinstance(module, Attention):
            module.use_sdpa = True
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model
