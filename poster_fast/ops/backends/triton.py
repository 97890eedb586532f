"""The "triton" backend: the fused Triton kernels of ops/triton/, on CUDA GPUs.

On CPU tensors they run only under Triton's interpreter (TRITON_INTERPRET=1, read when the
kernels are first imported): slow, for tests, so `auto` never picks this backend there. Triton
is looked up without being imported; the kernels and their torch ops (ops/triton/library.py)
load on the first run. Compute capability 8.0: the kernels' bf16 dots need sm_80 tensor cores,
and sm_80/sm_90 are the targets they are written and compiled for.
"""
from __future__ import annotations

import importlib.util
import os
import sys

import torch

from ..backend import Backend, CudaDevice
from ..validate import WindowProblem

MAX_GRID_Y = 65535  # CUDA's cap on grid axes 1 and 2; the table-gradient grids put H on axis 1
FOUND = importlib.util.find_spec("triton") is not None  # looked up, not imported


def interpreted() -> bool:
    """Whether the kernels run (or will run, once imported) in Triton's interpreter."""
    kernels = sys.modules.get("poster_fast.ops.triton.kernels")
    return kernels.INTERPRET if kernels is not None else os.environ.get("TRITON_INTERPRET") == "1"


def _missing() -> str:
    return "" if FOUND else "triton is not installed"


def _limits(p: WindowProblem, device: CudaDevice | None) -> list[str]:
    why = []
    if p.device.type == "cpu" and not interpreted():
        why.append("CPU tensors need TRITON_INTERPRET=1 set before the Triton kernels are first used")
    if p.heads > MAX_GRID_Y:
        why.append(f"H = {p.heads} > {MAX_GRID_Y} (CUDA grid axis 1 of the table-gradient kernels)")
    return why


def _run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb_table: torch.Tensor,
         p: WindowProblem) -> torch.Tensor:
    from ..triton import launch, library  # imports triton and registers the torch ops, once

    # The float32 head-major table the kernels read, made here where autograd sees it: the
    # backward op then receives it as it is (no copy of its own), and d_table flows back through.
    table = launch.table32(rpb_table)
    return library.wmca_fwd(q, k, v, table, p.window[0], p.window[1], p.scale)[0]


BACKEND = Backend(
    "triton", run=_run, devices=("cuda", "cpu"), auto_devices=("cuda",),
    dtypes=(torch.float32, torch.float16, torch.bfloat16), max_head_dim=128,
    max_window=(None, 64), min_compute_capability=(8, 0), missing=_missing, limits=_limits,
    torch_ops=("poster_fast::wmca_triton_fwd", "poster_fast::wmca_triton_bwd"))
