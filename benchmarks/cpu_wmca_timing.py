"""CPU timing of the fused W-MCSA kernels ("cpu" backend) against the eager reference.

python benchmarks/cpu_wmca_timing.py [--batch 8] [--level 1] [--repeats 7]
Both backends run on the same inputs in the same process; prints the median times and ratios.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from poster_fast.ops import window_cross_attention

LEVELS = {1: (28, 2), 2: (14, 4), 3: (7, 8)}  # window side, heads (head_dim 32)


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--level", type=int, default=1, choices=sorted(LEVELS))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    side, heads = LEVELS[args.level]
    n, d = side * side, 32
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, heads, n, d)
    q, k, v = (torch.randn(shape, generator=gen).requires_grad_() for _ in range(3))
    table = (0.5 * torch.randn((2 * side - 1) ** 2, heads, generator=gen)).requires_grad_()
    grad = torch.randn(shape, generator=gen)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, level {args.level}: "
          f"B={args.batch} H={heads} N={n} D={d} fp32, median of {args.repeats}")
    results = {}
    for backend in ("reference", "cpu"):
        def fwd():
            with torch.no_grad():
                window_cross_attention(q, k, v, table, side, backend=backend)

        def fwd_bwd():
            out = window_cross_attention(q, k, v, table, side, backend=backend)
            torch.autograd.grad(out, (q, k, v, table), grad)

        results[backend] = (median_seconds(fwd, args.repeats), median_seconds(fwd_bwd, args.repeats))
        print(f"{backend:>9}: forward {results[backend][0] * 1e3:8.2f} ms, "
              f"forward+backward {results[backend][1] * 1e3:8.2f} ms")
    ref, fused = results["reference"], results["cpu"]
    print(f"speed-up: forward {ref[0] / fused[0]:.2f}x, forward+backward {ref[1] / fused[1]:.2f}x")


if __name__ == "__main__":
    main()
