"""The machine's own roofline, measured in the same run as the model, and the model's fraction of it.

Per dtype the machine computes natively (fp32 always; bf16 where `device.native_bf16` says so):
- convolutions: the 3x3 convolutions of IR-50's three stages (64 channels at 56x56, 128 at 28x28,
  256 at 14x14), channels-last, batch 32, through torch's conv2d and, on the CPU, through oneDNN
  with a packed weight; the roofline is the faster path's rate over the three together (their
  FLOPs over their summed times);
- a matmul, 2048^3, through torch and, on the CPU, oneDNN's packed linear;
- predict's model (`inference.classifier.prepare_for_inference` at that precision) at the run's
  batch, and at batch 1 for latency.
All are timed interleaved, one call of each per round, and each takes its median over the rounds,
so a shared machine's drift falls on all of them alike. The model's FLOPs are counted by
torch.utils.flop_counter.FlopCounterMode on the plain float32 model with the reference W-MCSA
(whose matmuls it can see; the fused kernels are opaque to it): its rate is those FLOPs over the
optimized model's time, and `fraction` that rate over the convolution roofline.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .. import onednn
from ..device import hardware, native_bf16
from .op import DTYPES

CONV_CASES = ((64, 56), (128, 28), (256, 14))  # (channels, height = width) of IR-50's 3x3 convolutions
CONV_BATCH = 32
MATMUL_SIZE = 2048
Row = dict[str, Any]


def roofline_dtypes(device: torch.device, requested: list[str] | None) -> list[str]:
    """fp32, and bf16 where the device computes it natively; of `requested` when given."""
    native = ["fp32"] + (["bf16"] if native_bf16(hardware(device))[0] else [])
    return [d for d in native if requested is None or d in requested]


def model_flops(batch: int = 1) -> int:
    """FlopCounterMode's count for one forward of the plain float32 POSTERV2 at `batch` (224x224),
    with the reference W-MCSA so that its matmuls are counted (every op is per image: the count
    at batch B is B times the count at batch 1)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..model import POSTERV2

    model = POSTERV2(num_classes=7, attn_backend="reference").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(batch, 3, 224, 224))
    return counter.get_total_flops()


def conv_fns(dtype: torch.dtype, device: torch.device) -> dict[str, tuple[Callable[[], object], float]]:
    """The roofline's convolutions: "conv{channels}_{path}" -> (a call, its FLOPs)."""
    gen = torch.Generator(device=device).manual_seed(0)
    fns = {}
    for channels, size in CONV_CASES:
        x = torch.randn(CONV_BATCH, channels, size, size, generator=gen, device=device).to(
            dtype=dtype, memory_format=torch.channels_last)
        conv = torch.nn.Conv2d(channels, channels, 3, padding=1, device=device).to(
            dtype=dtype, memory_format=torch.channels_last).requires_grad_(False)
        flops = 2.0 * CONV_BATCH * channels * channels * 9 * size * size
        fns[f"conv{channels}_torch"] = (lambda x=x, conv=conv: conv(x), flops)
        if device.type == "cpu" and onednn.support(dtype)[0]:
            packed = onednn.OneDNNConv2d(conv)
            fns[f"conv{channels}_onednn"] = (lambda x=x, packed=packed: packed(x), flops)
    return fns


def matmul_fns(dtype: torch.dtype, device: torch.device) -> dict[str, tuple[Callable[[], object], float]]:
    """The roofline's matmuls: "matmul_{path}" -> (a call, its FLOPs)."""
    gen = torch.Generator(device=device).manual_seed(1)
    a, b = (torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=gen, device=device).to(dtype) for _ in range(2))
    flops = 2.0 * MATMUL_SIZE ** 3
    fns = {"matmul_torch": (lambda: a @ b, flops)}
    if device.type == "cpu" and onednn.support(dtype)[0]:
        linear = torch.nn.Linear(MATMUL_SIZE, MATMUL_SIZE, bias=False, device=device, dtype=dtype)
        linear.weight.data.copy_(b.t())
        packed = onednn.OneDNNLinear(linear.requires_grad_(False))
        fns["matmul_onednn"] = (lambda: packed(a), flops)
    return fns


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved_ms(fns: dict[str, Callable[[], object]], device: torch.device, warmup: int,
                   rounds: int, clock: str = "wall") -> dict[str, float]:
    """Median ms of each fn over `rounds` rounds of one call each, in turn (after `warmup` rounds),
    by the wall clock or by this process's CPU time (`clock`, a key of CLOCKS)."""
    now = CLOCKS[clock]
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.no_grad():
        for r in range(warmup + rounds):
            for name, fn in fns.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = now()
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if r >= warmup:
                    times[name].append((now() - t0) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def measure(dtype_name: str, batch: int, device: torch.device, warmup: int, rounds: int,
            flops_per_image: float, clock: str = "wall") -> Row:
    """One roofline row's measurements: the convolution and matmul rates (GFLOP/s), predict's
    model at `batch` and 1 (ms), its rate and its fraction of the convolution roofline."""
    from ..inference.classifier import prepare_for_inference
    from ..model import POSTERV2

    dtype = DTYPES[dtype_name]
    gen = torch.Generator(device=device).manual_seed(2)
    images = torch.randn(batch, 3, 224, 224, generator=gen, device=device)
    fast, _ = prepare_for_inference(POSTERV2(num_classes=7).to(device), device, dtype_name)
    kernels = {**conv_fns(dtype, device), **matmul_fns(dtype, device)}
    fns: dict[str, Callable[[], object]] = {name: fn for name, (fn, _) in kernels.items()}
    fns["model"] = lambda: fast(images)
    fns["model_b1"] = lambda: fast(images[:1])
    ms = interleaved_ms(fns, device, warmup, rounds, clock)
    rate = {name: flops / ms[name] / 1e6 for name, (_, flops) in kernels.items()}  # GFLOP/s
    paths = sorted({name.rsplit("_", 1)[1] for name in kernels if name.startswith("conv")})
    conv_by_path = {p: sum(f for n, (_, f) in kernels.items() if n.endswith(f"_{p}") and n.startswith("conv"))
                    / sum(ms[n] for n in kernels if n.endswith(f"_{p}") and n.startswith("conv")) / 1e6
                    for p in paths}
    conv_path = max(conv_by_path, key=conv_by_path.get)
    model_gflop_s = flops_per_image * batch / ms["model"] / 1e6
    return {
        "conv_gflop_s": conv_by_path[conv_path], "conv_path": conv_path,
        "conv_paths_gflop_s": conv_by_path,
        "conv_cases_gflop_s": {n: r for n, r in rate.items() if n.startswith("conv")},
        "matmul_gflop_s": max(r for n, r in rate.items() if n.startswith("matmul")),
        "matmul_paths_gflop_s": {n.split("_", 1)[1]: r for n, r in rate.items() if n.startswith("matmul")},
        "linear_path": onednn.linear_path(dtype) if device.type == "cpu" else "aten",
        "layers": fast.layers,
        "model_ms": ms["model"], "model_ms_per_image": ms["model"] / batch, "latency_b1_ms": ms["model_b1"],
        "model_gflop_s": model_gflop_s, "fraction": model_gflop_s / conv_by_path[conv_path],
    }
