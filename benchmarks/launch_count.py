"""Kernel launches of the Triton W-MCSA per training step of POSTER V2, counted on the CPU.

Per call: one forward and one backward of the op (backend "triton", the bias table a float32
parameter, as in the model) under TRITON_INTERPRET=1, counting the Triton launches (through the
launch layer, poster_fast/ops/triton/launch.py) and the torch ops that would launch a GPU kernel
(allocations, views and the interpreter's own copies not counted), autograd's included. Per
training step: those counts times the op's forward and backward calls in one training step
(zero_grad, forward, cross-entropy, backward, SGD step) of a random-weight POSTERV2, batch 1, its
Triton kernels recorded but not run. On a GPU every launch costs host time (Python dispatch,
argument binding): what levels 2 and 3, host-bound at batch 144, pay per step.

    python benchmarks/launch_count.py
"""
from __future__ import annotations

import functools
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable

os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are imported

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from poster_fast.ops import window_cross_attention  # noqa: E402
from poster_fast.ops.triton import launch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from wmca_utils import Case, make_inputs  # noqa: E402

# Ops that launch no kernel: allocations, views, and the op's own names (their insides are counted).
NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "t", "transpose", "view",
             "_unsafe_view", "as_strided", "detach", "alias", "expand", "slice", "select", "unsqueeze",
             "squeeze", "permute", "wmca_triton_fwd", "wmca_triton_bwd"}
COUNTS: Counter[str] = Counter()
PHASE: list[str] = []  # forward / backward, then "triton" inside a Triton launch (not counted)
REAL_LAUNCH = launch._launch


class TorchKernels(TorchDispatchMode):
    """Counts, under the current phase, the torch ops that launch a kernel."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if PHASE and PHASE[-1] != "triton" and name not in NO_KERNEL:
            COUNTS[f"{PHASE[-1]}: torch {name}"] += 1
        return func(*args, **(kwargs or {}))


def in_phase(phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """fn with its torch ops counted under `phase` (the op's insides run without the outer mode)."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        COUNTS[f"{phase} calls"] += 1
        PHASE.append(phase)
        try:
            with TorchKernels():
                return fn(*args, **kwargs)
        finally:
            PHASE.pop()
    return run


def counted_launch(execute: bool) -> Callable[[Any], Any]:
    """A launch layer that counts each Triton launch under the current phase (and runs it)."""
    class Launch:
        def __init__(self, kernel: Any) -> None:
            self.kernel = kernel

        def __getitem__(self, grid: Any) -> Callable[..., Any]:
            def run(*args: Any, **kwargs: Any) -> Any:
                COUNTS[f"{PHASE[-1]}: triton {self.kernel.fn.__name__}"] += 1
                if execute:
                    PHASE.append("triton")
                    try:
                        return REAL_LAUNCH(self.kernel)[grid](*args, **kwargs)
                    finally:
                        PHASE.pop()
            return run
    return Launch


def per_call() -> dict[str, int]:
    """Launches of one forward and one backward of the op, by phase and kernel."""
    case = Case(1, 1, 8, (7, 7), 32)
    q, k, v, table = make_inputs(case, torch.float32, seed=0)
    COUNTS.clear()
    launch._launch = counted_launch(execute=True)
    out = in_phase("forward", window_cross_attention)(q, k, v, table, case.window, backend="triton")
    in_phase("backward", torch.autograd.backward)(out, torch.randn_like(out))
    return {key: n for key, n in COUNTS.items() if ": " in key}


def calls_per_step() -> Counter[str]:
    """The op's forward and backward calls in one POSTERV2 training step (kernels not run)."""
    from poster_fast.model import POSTERV2

    COUNTS.clear()
    launch._launch = counted_launch(execute=False)
    torch.manual_seed(0)
    model = POSTERV2(num_classes=7, attn_backend="triton").train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    images, labels = torch.randn(1, 3, 224, 224), torch.randint(0, 7, (1,))
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    opt.step()
    return Counter({key: n for key, n in COUNTS.items() if key.endswith(" calls")})


def main() -> None:
    # The launch layer's functions, wrapped before library.py registers them as torch ops.
    launch.forward = in_phase("forward", launch.forward)
    launch.backward = in_phase("backward", launch.backward)
    calls = calls_per_step()
    counts = per_call()
    steps = {"forward": calls["forward calls"], "backward": calls["backward calls"]}
    print("Launches of one W-MCSA call (backend 'triton', float32 table parameter), TRITON_INTERPRET=1:")
    for key in sorted(counts):
        print(f"  {key}: {counts[key]}")
    total = Counter()
    for key, n in counts.items():
        phase, kind = key.split(": ")[0], key.split(": ")[1].split()[0]
        total[kind] += n * steps[phase]
    print(f"One POSTERV2 training step (batch 1) calls the op {steps['forward']} times forward and "
          f"{steps['backward']} times backward: {total['triton']} Triton launches + {total['torch']} torch "
          f"kernels = {total['triton'] + total['torch']} launches per training step")


if __name__ == "__main__":
    main()
