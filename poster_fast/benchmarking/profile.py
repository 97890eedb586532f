"""Where a model's time goes, per class of operation: every ATen (and poster_fast, mkldnn) call
of one forward timed as it runs, classed by the op and by the module it runs in, with its FLOPs.

A `TorchDispatchMode` sees each op after autograd and composite decompositions (a linear layer
as the addmm or fused oneDNN op that computes it), runs it and times it with perf_counter (CPU
ops run synchronously); the module that runs it comes from global forward hooks. The timings
include the mode's own cost, a few microseconds an op, which `overhead_ms` estimates.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

# The classes, in the order of the table.
OP_CLASSES = ("convolution", "linear", "depthwise convolution", "attention", "normalisation",
              "elementwise", "layout copy", "window partition", "other")
CONV_OPS = {"aten::convolution", "aten::_convolution", "mkldnn::_convolution_pointwise"}
LINEAR_OPS = {"aten::addmm", "aten::mm", "aten::linear", "mkldnn::_linear_pointwise", "mkl::_mkl_linear"}
ATTENTION_OPS = {"aten::_scaled_dot_product_flash_attention_for_cpu", "aten::bmm", "aten::baddbmm",
                 "aten::_softmax", "poster_fast::wmca_fwd"}
NORM_OPS = {"aten::native_layer_norm", "aten::native_batch_norm", "aten::_native_batch_norm_legit_no_training",
            "aten::batch_norm"}
COPY_OPS = {"aten::clone", "aten::copy_", "aten::_to_copy", "aten::cat", "aten::contiguous",
            "aten::upsample_nearest2d", "aten::_unsafe_view"}
ELEMENTWISE_OPS = {"aten::add", "aten::mul", "aten::gelu", "aten::_prelu_kernel", "aten::relu", "aten::sigmoid",
                   "aten::add_", "aten::mul_", "aten::sub", "aten::div", "aten::where", "aten::prelu"}
# Copies made inside these modules (and not inside a child of theirs) are the windows' partition
# and reverse (model/cross_fusion.py).
WINDOW_MODULES = ("WindowNorm", "FusionFeedForward")


@dataclass
class Profile:
    """Milliseconds, FLOPs and calls per op class for one forward; `ops` per op name."""

    ms: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    flops: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ops: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))

    @property
    def total_ms(self) -> float:
        return sum(self.ms.values())


def _name(func: Any) -> str:
    return func._schema.name


def _weight(func: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The weight argument of a convolution or linear op (`weight` in ATen, `W` in mkldnn)."""
    named = dict(zip((a.name for a in func._schema.arguments), args)) | kwargs
    return named.get("weight", named.get("W"))


def op_flops(func: Any, args: tuple, kwargs: dict, out: Any) -> int:
    """FLOPs of one op: torch's flop_counter formulas, plus the fused oneDNN and W-MCSA ops."""
    name = _name(func)
    if func._overloadpacket in flop_registry:
        return int(flop_registry[func._overloadpacket](*args, **kwargs, out_val=out))
    if name == "aten::_scaled_dot_product_flash_attention_for_cpu":  # the same formula as CUDA's flash
        return int(flop_registry[torch.ops.aten._scaled_dot_product_flash_attention](*args[:3], out_val=out))
    if name in ("mkldnn::_convolution_pointwise", "mkldnn::_linear_pointwise", "mkl::_mkl_linear"):
        x = args[0]  # one multiply-add per output element and input element it reads
        weight = _weight(func, args, kwargs)
        per_output = math.prod(weight.shape[1:]) if name.startswith("mkldnn::_conv") else x.shape[-1]
        return 2 * out.numel() * per_output
    if name == "poster_fast::wmca_fwd":  # the two matmuls: 4 * (B*nW) * H * N * N * D
        q, k = args[0], args[1]
        return 4 * k.shape[0] * k.shape[1] * q.shape[2] * k.shape[2] * k.shape[3]
    return 0


def classify(func: Any, args: tuple, kwargs: dict, modules: list[str]) -> str:
    """The op class of `func` called with `args` inside `modules` (outermost first)."""
    name = _name(func)
    inner = modules[-1] if modules else ""
    if name in CONV_OPS:
        weight = _weight(func, args, kwargs)
        if weight is not None and weight.dim() == 4 and weight.shape[1] == 1 and weight.shape[0] > 1:
            return "depthwise convolution"
        return "convolution"
    if name in LINEAR_OPS:
        return "linear"
    if name in ATTENTION_OPS or name.startswith("poster_fast::"):
        return "attention"
    if name in NORM_OPS:
        return "normalisation"
    if name in COPY_OPS:
        return "window partition" if inner in WINDOW_MODULES else "layout copy"
    if name in ELEMENTWISE_OPS:
        return "elementwise"
    return "other"


class _Timer(TorchDispatchMode):
    def __init__(self, profile: Profile, modules: list[str], clock: Callable[[], float]) -> None:
        super().__init__()
        self.profile, self.modules, self.clock = profile, modules, clock

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        t0 = self.clock()
        out = func(*args, **kwargs)
        ms = (self.clock() - t0) * 1e3
        cls = classify(func, args, kwargs, self.modules)
        p = self.profile
        p.ms[cls] += ms
        p.calls[cls] += 1
        p.flops[cls] += op_flops(func, args, kwargs, out)
        p.ops[(cls, _name(func))] += ms
        return out


def profile_forward(fn: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> Profile:
    """Run fn() once under the timer and return its profile. `clock`: seconds, wall time by
    default (time.thread_time counts only this thread's CPU time: steadier on a shared machine,
    and the whole time where torch runs one thread)."""
    profile, stack = Profile(), []

    def enter(module: nn.Module, _args: Any) -> None:
        stack.append(type(module).__name__)

    def leave(_module: nn.Module, _args: Any, _out: Any) -> None:
        stack.pop()

    pre = nn.modules.module.register_module_forward_pre_hook(enter)
    post = nn.modules.module.register_module_forward_hook(leave)
    try:
        with torch.no_grad(), _Timer(profile, stack, clock):
            fn()
    finally:
        pre.remove()
        post.remove()
    return profile


def profile_model(dtype_name: str, batch: int, device: torch.device, warmup: int, rounds: int,
                  clock: Callable[[], float] = time.perf_counter) -> list[dict[str, Any]]:
    """Per op class, the medians over `rounds` profiled forwards (after `warmup` plain ones) of
    predict's model (`prepare_for_inference`) at precision `dtype_name` on `batch` random images."""
    import statistics

    from ..inference.classifier import prepare_for_inference
    from ..model import POSTERV2

    fast, _ = prepare_for_inference(POSTERV2(num_classes=7).to(device), device, dtype_name)
    images = torch.randn(batch, 3, 224, 224, generator=torch.Generator(device=device).manual_seed(3), device=device)
    with torch.no_grad():
        for _ in range(warmup):
            fast(images)
    profiles = [profile_forward(lambda: fast(images), clock) for _ in range(max(rounds, 1))]
    total = statistics.median(p.total_ms for p in profiles)
    rows = []
    for c in OP_CLASSES:
        if not profiles[0].calls.get(c):
            continue
        ms = statistics.median(p.ms.get(c, 0.0) for p in profiles)
        flops = profiles[0].flops.get(c, 0)
        rows.append({"op_class": c, "ms": ms, "share": ms / total if total else 0.0, "gflop": flops / 1e9,
                     "gflop_s": flops / ms / 1e6 if flops and ms else None, "calls": profiles[0].calls[c]})
    return rows
