"""oneDNN modules for CPU inference, with weights packed once into oneDNN's blocked layout.

torch runs a CPU convolution through oneDNN but reorders its weight into the blocked layout on
every call, and runs a linear layer through its BLAS (MKL), which on some CPUs (AMD's) takes a
slower code path than oneDNN's JIT kernels. These modules keep the layer's `weight` and `bias`
as they were (same state-dict keys and values) and call oneDNN with a packed copy of the weight,
made on the first call and again whenever the weight changes; they can also fuse a residual add
(convolutions) or a GELU (linear layers) into the same kernel. Under torch.compile they run the
plain ops, which Inductor prepacks itself (freezing).

Whether oneDNN or ATen runs the linear layers is measured on the machine at hand
(`linear_path`), since which is faster depends on the CPU and its BLAS.
"""
from __future__ import annotations

import functools
import os
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

LINEAR_PATHS = ("aten", "onednn")
LINEAR_ENV = "POSTER_FAST_CPU_LINEAR"  # forces one of LINEAR_PATHS


def _bf16_path() -> bool:
    """torch's answer: whether oneDNN has a bf16 path on this CPU."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def support(dtype: torch.dtype) -> tuple[bool, str]:
    """Whether oneDNN computes `dtype` on this CPU, and why not: float32 wherever torch has
    oneDNN, bfloat16 where torch reports a oneDNN bf16 path (AVX-512 and AMX CPUs; not AVX2-only
    ones, where torch's own bf16 kernels run)."""
    if not torch.backends.mkldnn.is_available():
        return False, "torch was built without oneDNN"
    if dtype == torch.float32:
        return True, "oneDNN computes float32 on every CPU"
    if dtype != torch.bfloat16:
        return False, f"oneDNN has no CPU inference path for {dtype} here"
    if not _bf16_path():
        return False, "oneDNN has no bf16 path on this CPU (it has one on AVX-512 and AMX CPUs)"
    return True, "oneDNN has a bf16 path on this CPU"


class _Packed(nn.Module):
    """A layer whose oneDNN copy of `weight` is made on first use and redone when the weight
    changes (in place, or replaced); the copy is never saved or deep-copied."""

    weight: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self._packed: tuple[tuple, torch.Tensor] | None = None

    def _pack(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        if self._packed is None or self._packed[0] != key:
            with torch.no_grad():
                self._packed = key, self._pack(x)
        return self._packed[1]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_packed": None}


class OneDNNConv2d(_Packed):
    """nn.Conv2d through oneDNN with a packed weight; `forward(x, add)` returns conv(x) + add
    with the add done in the convolution's kernel."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"conv: expected zero padding given as numbers, got {conv.padding!r}, {conv.padding_mode}")
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding, self.dilation = list(conv.stride), list(conv.padding), list(conv.dilation)
        self.groups = conv.groups

    def _pack(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_convolution_weight(
            self.weight.detach(), self.padding, self.stride, self.dilation, self.groups, list(x.shape))

    def forward(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        if _plain(x, self.weight):
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            return y if add is None else y + add
        w = self.packed_weight(x)
        args = (self.padding, self.stride, self.dilation, self.groups)
        if add is None:
            return torch.ops.mkldnn._convolution_pointwise(x, w, self.bias, *args, "none", [], "")
        add = add.contiguous(memory_format=_layout_of(x))
        return torch.ops.mkldnn._convolution_pointwise(x, add, w, self.bias, *args, "add", None, None, [], None)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, stride={self.stride}, padding={self.padding}, groups={self.groups}"


def _plain(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether to run the plain ATen op: while compiling (Inductor packs weights itself), and
    where gradients are needed (the oneDNN ops have none)."""
    return torch.compiler.is_compiling() or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))


def _layout_of(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


class OneDNNLinear(_Packed):
    """nn.Linear through oneDNN with a packed weight, optionally followed by an exact (erf)
    GELU in the same kernel (`gelu=True`)."""

    def __init__(self, linear: nn.Linear, gelu: bool = False) -> None:
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.gelu = gelu

    def _pack(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), x.numel() // x.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _plain(x, self.weight):
            y = F.linear(x, self.weight, self.bias)
            return F.gelu(y) if self.gelu else y
        attr, algorithm = ("gelu", "none") if self.gelu else ("none", "")
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight(x), self.bias, attr, [], algorithm)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, gelu={self.gelu}"


@functools.cache
def _measured_linear_path(dtype: torch.dtype, threads: int) -> str:
    """The faster of ATen's linear and oneDNN's on a linear layer of the model's fusion ViT
    (1184 x 768 tokens by 768 -> 768: batch 8), by the median of interleaved calls."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1184, 768, generator=gen).to(dtype)
    layer = nn.Linear(768, 768).to(dtype).requires_grad_(False)
    candidates = {"aten": layer, "onednn": OneDNNLinear(layer)}
    times: dict[str, list[float]] = {name: [] for name in candidates}
    with torch.no_grad():
        for _ in range(7):
            for name, fn in candidates.items():
                t0 = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - t0)
    return min(times, key=lambda name: statistics.median(times[name][1:]))


def linear_path(dtype: torch.dtype) -> str:
    """"onednn" or "aten": which runs the linear layers of CPU inference in `dtype`. The env var
    POSTER_FAST_CPU_LINEAR forces one; else "aten" where oneDNN lacks `dtype`, else the faster of
    the two as measured here (once per dtype and thread count, about 0.1 s)."""
    forced = os.environ.get(LINEAR_ENV)
    if forced:
        if forced not in LINEAR_PATHS:
            raise ValueError(f"{LINEAR_ENV}: expected one of {', '.join(LINEAR_PATHS)}, got {forced!r}")
        return forced if support(dtype)[0] else "aten"
    if not support(dtype)[0]:
        return "aten"
    return _measured_linear_path(dtype, torch.get_num_threads())
