"""poster_fast._C, the compiled W-MCSA kernels behind the "cpu" and "cuda" backends.

`torch.ops.poster_fast.wmca_fwd` / `wmca_bwd` (schemas in csrc/wmca.cpp) get their fake kernels
and autograd from ops/autograd.py here. A library that is missing or fails to load is no error:
`LOAD_ERROR` says why, and both backends report it as their reason.
"""
from __future__ import annotations

import torch

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
