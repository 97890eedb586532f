"""pytest-benchmark suite: sizes by device (POSTER's batch 144 on CUDA, tiny on CPU).

`pytest benchmarks/ --benchmark-only`; groups read per level (ops) or per mode (model), one row
per backend. POSTER_BENCH_THREADS sets the CPU threads (default 1: a shared, busy 2-core box
runs 5x faster without OpenMP oversubscription).
"""
import itertools
import os
from typing import Callable

import torch

# Before poster_fast is imported: Triton kernels need the interpreter where there is no GPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
OP_BATCH = 144 if CUDA else 2
MODEL_BATCH = 144 if CUDA else 1
DTYPES = ["fp32", "bf16"] if CUDA else ["fp32"]
OP_ROUNDS = (5, 20) if CUDA else (1, 3)  # (warm-up, timed rounds)
MODEL_ROUNDS = (3, 10) if CUDA else (1, 2)

if not CUDA:
    torch.set_num_threads(int(os.environ.get("POSTER_BENCH_THREADS", "1")))


def run_benchmark(benchmark, step: Callable[[int], None], rounds: tuple[int, int]) -> None:
    """Time step(i), i rotating the inputs; CUDA work is synchronised inside each round."""
    counter = itertools.count()

    def call() -> None:
        step(next(counter))
        if CUDA:
            torch.cuda.synchronize()
    benchmark.pedantic(call, warmup_rounds=rounds[0], rounds=rounds[1], iterations=1)


def median_s(benchmark) -> float | None:
    """The measured median in seconds (None under --benchmark-disable)."""
    stats = getattr(benchmark, "stats", None)
    return stats.stats.median if stats else None
