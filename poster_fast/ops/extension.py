"""poster_fast._C, the compiled W-MCSA kernels behind the "cpu" and "cuda" backends.

`torch.ops.poster_fast.wmca_fwd` / `wmca_bwd` (schemas in csrc/wmca.cpp) get their fake kernels
and autograd from ops/autograd.py here. A library that is missing or fails to load is no error:
`LOAD_ERROR` says why, and both backends report it as their reason.
"""
from __future__ import annotations

import os

import torch

from ..errors import UsageError
from . import autograd
from .validate import WindowProblem

try:
    from poster_fast import _C
except ImportError as exc:
    _C = None
    LOAD_ERROR = (f"poster_fast._C cannot be loaded ({exc}); rebuild it against the installed torch: "
                  "`pip install --no-build-isolation .` (a source checkout: `python setup.py build_ext --inplace`)")
else:
    LOAD_ERROR = ""
    autograd.register_fakes("poster_fast::wmca_fwd", "poster_fast::wmca_bwd")
    autograd.register_autograd("poster_fast::wmca_fwd", torch.ops.poster_fast.wmca_bwd)

WITH_CUDA: bool = bool(getattr(_C, "with_cuda", False))


def missing() -> str:
    return LOAD_ERROR


def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb_table: torch.Tensor,
        p: WindowProblem) -> torch.Tensor:
    return torch.ops.poster_fast.wmca_fwd(q, k, v, rpb_table, p.window[0], p.window[1], p.scale)[0]


def check_cpu_isa_environment() -> None:
    """UsageError unless POSTER_FAST_CPU_ISA (read by the CPU kernels on their first call, which
    refuse it there) is unset, "auto", or a build of them that this CPU runs."""
    name = os.environ.get("POSTER_FAST_CPU_ISA") or "auto"
    if _C is None or name == "auto":
        return
    builds, runnable = torch.ops.poster_fast.cpu_isas(True), torch.ops.poster_fast.cpu_isas()
    if name not in builds:
        raise UsageError(f"POSTER_FAST_CPU_ISA: expected one of auto, {', '.join(builds)}, got {name!r}")
    if name not in runnable:
        raise UsageError(f"POSTER_FAST_CPU_ISA: this CPU cannot run the {name} build; it runs auto, "
                         f"{', '.join(runnable)}")
