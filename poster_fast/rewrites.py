"""Rewrites of a POSTERV2 that compute the same function faster; `optimize()` applies them.

Kept-tensor rewrites (a model being trained sees the same parameters and buffers): 1x1 max-pool
shortcuts as strided slices, PyTorch's fused attention (SDPA) in the ViT, channels-last weights.
Inference only: BatchNorm folded into the convolution that feeds it, weights held in the
inference dtype (`OptimizedPOSTER` casts the input once) and, on the CPU, convolutions and linear
layers through oneDNN with packed weights (`use_onednn`: residual adds and the MLPs' GELU fused
into the layer before them).
"""
from __future__ import annotations

import torch
from torch import nn

from . import onednn
from .model import POSTERV2
from .model.cross_fusion import Mlp
from .model.fusion_vit import Attention
from .model.ir50 import BottleneckIR
from .model.mobilefacenet import ConvBlock, DepthWise, LinearBlock

# Blocks whose forward computes bn(conv(x)) from these two children (MobileFaceNet's).
CONV_BN_BLOCKS: dict[type[nn.Module], tuple[str, str]] = {
    ConvBlock: ("conv", "bn"),
    LinearBlock: ("conv", "bn"),
}


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


def conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) qualified names of every BatchNorm2d fed directly by a Conv2d: consecutive
    children of an nn.Sequential, or the two children of a block in CONV_BN_BLOCKS.

    A BatchNorm *before* a conv (the IR units' leading BN) is not a pair: folding it into the
    conv's weights would also scale the zero padding, which BN would have shifted first, so the
    border outputs would change. It stays a BatchNorm.
    """
    pairs = []
    for name, block in module.named_modules():
        prefix = f"{name}." if name else ""
        if type(block) in CONV_BN_BLOCKS:
            conv, bn = CONV_BN_BLOCKS[type(block)]
            candidates = [(conv, getattr(block, conv), bn, getattr(block, bn))]
        elif isinstance(block, nn.Sequential):
            candidates = [(str(i), block[i], str(i + 1), block[i + 1]) for i in range(len(block) - 1)]
        else:
            continue
        pairs += [(prefix + c, prefix + b) for c, conv_module, b, bn_module in candidates
                  if isinstance(conv_module, nn.Conv2d) and isinstance(bn_module, nn.BatchNorm2d)]
    return pairs


def _replace(module: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent), child, new)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every conv -> BatchNorm pair of `conv_bn_pairs` in place (the BN becomes Identity)."""
    for conv_name, bn_name in conv_bn_pairs(module):
        conv, bn = module.get_submodule(conv_name), module.get_submodule(bn_name)
        _replace(module, conv_name, fold_conv_bn(conv, bn))
        _replace(module, bn_name, nn.Identity())
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
    """Runs the rewritten model in `dtype`, on channels-last inputs if asked: with its weights
    held in `dtype` (inference: the input is cast once, the logits return in float32), or with
    float32 weights under autocast to `dtype` (`autocast`, training). `layers` says which
    library runs its convolutions and linear layers, and why (`use_onednn`)."""

    def __init__(self, model: POSTERV2, dtype: torch.dtype, channels_last: bool, autocast: bool,
                 layers: str = "ATen layers") -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.channels_last = channels_last
        self.autocast = autocast
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layout = torch.channels_last if self.channels_last else torch.preserve_format
        if self.autocast:
            x = x.contiguous(memory_format=layout)
            with torch.autocast(x.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                return self.model(x)
        return self.model(x.to(dtype=self.dtype, memory_format=layout)).float()


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


class FusedAddIR(nn.Module):
    """A BottleneckIR (same children) whose residual branch's last convolution adds the
    shortcut in its own kernel; what follows it in `res_layer` is Identity (a folded BN)."""

    def __init__(self, block: BottleneckIR) -> None:
        super().__init__()
        self.shortcut_layer, self.res_layer = block.shortcut_layer, block.res_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *body, last = [m for m in self.res_layer if not isinstance(m, nn.Identity)]
        y = x
        for module in body:
            y = module(y)
        return last(y, add=self.shortcut_layer(x))


class FusedAddDepthWise(nn.Module):
    """A residual MobileFaceNet DepthWise (same children) whose projection adds its input in the
    convolution's kernel (the projection's BN is folded: Identity)."""

    def __init__(self, block: DepthWise) -> None:
        super().__init__()
        self.conv, self.conv_dw, self.project, self.residual = block.conv, block.conv_dw, block.project, True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project.conv(self.conv_dw(self.conv(x)), add=x)


def _fuses_add(block: nn.Module) -> bool:
    """Whether `block` ends in a folded conv (a conv followed only by Identity) that can take its residual."""
    if isinstance(block, BottleneckIR):
        tail = [m for m in block.res_layer if not isinstance(m, nn.Identity)][-1]
        return isinstance(tail, nn.Conv2d)
    return isinstance(block, DepthWise) and block.residual and isinstance(block.project.bn, nn.Identity)


def use_onednn(model: nn.Module, dtype: torch.dtype) -> str:
    """CPU inference on folded weights, in place: every Conv2d through oneDNN with a packed weight,
    residual adds fused into the convolution before them (IR units, MobileFaceNet's residual
    blocks), and every Linear through oneDNN (GELU fused into the MLPs' first layer) where
    `onednn.linear_path(dtype)` finds it faster. Nothing changes where oneDNN lacks `dtype`.
    State-dict keys and values stay as they were. Returns which layers run, and why."""
    ok, why = onednn.support(dtype)
    if not ok:
        return f"ATen layers: {why}"
    fused = {FusedAddIR: BottleneckIR, FusedAddDepthWise: DepthWise}
    for name, block in list(model.named_modules()):
        for new, old in fused.items():
            if type(block) is old and _fuses_add(block):
                _replace(model, name, new(block))
    linear = onednn.linear_path(dtype)
    if linear == "onednn":
        for mlp in [m for m in model.modules() if isinstance(m, Mlp)]:
            if isinstance(mlp.act, nn.GELU) and mlp.act.approximate == "none":
                mlp.fc1, mlp.act = onednn.OneDNNLinear(mlp.fc1, gelu=True), nn.Identity()
        for name, layer in [(n, m) for n, m in model.named_modules() if type(m) is nn.Linear]:
            _replace(model, name, onednn.OneDNNLinear(layer))
    for name, conv in [(n, m) for n, m in model.named_modules() if type(m) is nn.Conv2d]:
        _replace(model, name, onednn.OneDNNConv2d(conv))
    return f"oneDNN convolutions (packed weights, fused residual adds), linear layers through {linear}"
