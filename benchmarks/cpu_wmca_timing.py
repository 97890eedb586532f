"""CPU timing of the fused W-MCSA kernels ("cpu" backend) against the eager reference.

python benchmarks/cpu_wmca_timing.py [--batch 8] [--levels 1 2 3] [--dtypes float32 bfloat16]
    [--repeats 9] [--min-time 2] [--threads 2] [--isa avx2] [--table-dtype same|float32]
    [--json out.json]

Both backends run on the same inputs in the same process, interleaved repeat by repeat (so a
load change on a shared machine hits both); prints per (level, dtype, pass) the median times,
the ratio of the medians and the spread (min-max) of the per-repeat ratios. For fp16 / bf16 a
third variant, "copies", runs the cpu kernels the way they ran before they read half precision
directly: on float32 copies of the inputs, the output converted back (autograd converts the
gradients); "gain" is its time over the cpu backend's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from poster_fast.model import LEVELS as MODEL_LEVELS
from poster_fast.ops import window_cross_attention

LEVELS = dict(enumerate(MODEL_LEVELS, start=1))  # POSTER's levels by number
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}
BACKENDS = ("reference", "cpu")


def cpu_isa(requested: str | None) -> str:
    """Select `requested` (if given) and return the ISA the cpu backend runs."""
    if requested:
        torch.ops.poster_fast.set_cpu_isa(requested)
    return torch.ops.poster_fast.cpu_isa()


def make_problem(level: int, batch: int, dtype: torch.dtype, table_dtype: torch.dtype):
    side, heads = LEVELS[level].window, LEVELS[level].heads
    gen = torch.Generator().manual_seed(level)
    shape = (batch, heads, LEVELS[level].tokens, LEVELS[level].head_dim)
    q, k, v = (torch.randn(shape, generator=gen).to(dtype).requires_grad_() for _ in range(3))
    table = (0.5 * torch.randn((2 * side - 1) ** 2, heads, generator=gen)).to(table_dtype)
    grad = torch.randn(shape, generator=gen).to(dtype)
    return (q, k, v, table.requires_grad_()), side, grad


def time_pair(fns: dict, repeats: int, min_seconds: float) -> dict:
    """Warm up each fn, then interleaved timed runs: `repeats`, or more (up to 20x) until the
    slowest fn's runs add up to `min_seconds` (short ops are the noisiest)."""
    slowest = 0.0
    for fn in fns.values():
        fn()
        start = time.perf_counter()
        fn()
        slowest = max(slowest, time.perf_counter() - start)
    repeats = max(repeats, min(20 * repeats, int(min_seconds / max(slowest, 1e-6))))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def attention(variant: str, inputs, side: int) -> torch.Tensor:
    if variant == "copies":
        out = window_cross_attention(*(t.float() for t in inputs), side, backend="cpu")
        return out.to(inputs[0].dtype)
    return window_cross_attention(*inputs, side, backend=variant)


def summary(slow: list[float], fast: list[float]) -> tuple[float, float, float]:
    """Ratio of the medians, and min and max of the per-repeat ratios."""
    ratios = [s / f for s, f in zip(slow, fast)]
    return statistics.median(slow) / statistics.median(fast), min(ratios), max(ratios)


def run_case(level: int, batch: int, dtype: torch.dtype, table_dtype: torch.dtype,
             repeats: int, min_seconds: float) -> list[dict]:
    inputs, side, grad = make_problem(level, batch, dtype, table_dtype)

    def forward(variant):
        def fn():
            with torch.no_grad():
                attention(variant, inputs, side)
        return fn

    def forward_backward(variant):
        def fn():
            torch.autograd.grad(attention(variant, inputs, side), inputs, grad)
        return fn

    variants = BACKENDS + (("copies",) if dtype in (torch.float16, torch.bfloat16) else ())
    rows = []
    for name, make in (("fwd", forward), ("fwd+bwd", forward_backward)):
        times = time_pair({v: make(v) for v in variants}, repeats, min_seconds)
        row = dict(level=level, dtype=str(dtype).removeprefix("torch."), pass_=name,
                   repeats=len(times["cpu"]),
                   **{f"{v}_ms": 1e3 * statistics.median(times[v]) for v in variants})
        row["speedup"], row["ratio_min"], row["ratio_max"] = summary(times["reference"], times["cpu"])
        if "copies" in times:
            row["gain"], row["gain_min"], row["gain_max"] = summary(times["copies"], times["cpu"])
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3], choices=sorted(LEVELS))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "float16"],
                        choices=sorted(DTYPES))
    parser.add_argument("--table-dtype", default="same", choices=["same", "float32"],
                        help="dtype of the bias table: the inputs' (as in a bf16 model) or float32")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--min-time", type=float, default=2.0,
                        help="more repeats (up to 20x) until the slowest variant runs this long (s)")
    parser.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads")
    parser.add_argument("--isa", default=None, help="force a CPU kernel ISA (see cpu_isas())")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    isa = cpu_isa(args.isa)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu ISA {isa}, "
          f"batch {args.batch}, table {args.table_dtype}, median of >= {args.repeats} interleaved "
          f"repeats, load average {load:.2f} at start")
    print("| level | dtype | pass | reference ms | cpu ms | speed-up | per-repeat min-max "
          "| copies ms | gain | per-repeat min-max |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for level in args.levels:
        for name in args.dtypes:
            dtype = DTYPES[name]
            table_dtype = dtype if args.table_dtype == "same" else torch.float32
            for row in run_case(level, args.batch, dtype, table_dtype, args.repeats, args.min_time):
                rows.append(row)
                copies = (f"{row['copies_ms']:.2f} | {row['gain']:.2f}x | "
                          f"{row['gain_min']:.2f}-{row['gain_max']:.2f}" if "gain" in row else " | |")
                print(f"| {level} | {row['dtype']} | {row['pass_']} | {row['reference_ms']:.2f} | "
                      f"{row['cpu_ms']:.2f} | {row['speedup']:.2f}x | "
                      f"{row['ratio_min']:.2f}-{row['ratio_max']:.2f} | {copies} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    if args.json:
        meta = dict(torch=torch.__version__, threads=torch.get_num_threads(), isa=isa,
                    batch=args.batch, table_dtype=args.table_dtype, repeats=args.repeats,
                    min_time=args.min_time, load_start=load, load_end=os.getloadavg()[0])
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
