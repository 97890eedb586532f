"""Median timing (CUDA events on the GPU), progress lines and the soft time limit of a run."""
from __future__ import annotations

import statistics
import sys
import time
from typing import Callable

import torch


def time_ms(fn: Callable[[int], object], device: torch.device, warmup: int, iters: int) -> float:
    """Median milliseconds of fn(i) over `iters` calls after `warmup` calls; i rotates inputs.
    CUDA calls are timed with CUDA events; CPU calls with perf_counter (synchronous there)."""
    for i in range(warmup):
        fn(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(iters)]
        for i, (start, end) in enumerate(events):
            start.record()
            fn(warmup + i)
            end.record()
        torch.cuda.synchronize(device)
        times = [start.elapsed_time(end) for start, end in events]
    else:
        times = []
        for i in range(iters):
            t0 = time.perf_counter()
            fn(warmup + i)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


class Progress:
    """One line per step on stderr with the elapsed time (stdout keeps only the tables)."""

    def __init__(self, enabled: bool = True) -> None:
        self.t0, self.enabled = time.perf_counter(), enabled

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class Deadline:
    """The soft time limit: once it has passed, no new row starts (rows already running finish)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.end = None if seconds is None else time.monotonic() + seconds

    def passed(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end

    @property
    def reason(self) -> str:
        return f"not started: the time limit ({self.seconds:g} s, --time-limit) had passed"
