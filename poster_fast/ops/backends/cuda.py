"""The "cuda" backend: the CUDA kernels of poster_fast._C, when it was built with CUDA.

Its limits come from the extension itself: `_C.cuda_max_head_dim` and `_C.cuda_unsupported`,
the check the C++ launcher runs before every launch (head_dim, grid axes, 32-bit indices, and
the tiles' shared memory against the device's opt-in limit), so `auto` never picks it for a
problem the launcher would refuse. Compute capability 8.0: the kernels are built for sm_80 and
sm_90, and their bf16 WMMA tiles need sm_80. Under torch.compile the check runs once while
tracing, on sizes specialised to the traced ones (a new size retraces).
"""
from __future__ import annotations

import operator

import torch

from .. import extension
from ..backend import Backend, CudaDevice, constant_when_traced
from ..validate import WindowProblem


def _missing() -> str:
    if extension.LOAD_ERROR:
        return extension.LOAD_ERROR
    if not extension.WITH_CUDA:
        return "poster_fast._C was built without CUDA (needs a CUDA torch and nvcc at build time)"
    return ""


@constant_when_traced
def _unsupported(dtype: str, batch: int, windows: int, heads: int, tokens: int, head_dim: int,
                 wh: int, ww: int, max_smem: int) -> str:
    return extension._C.cuda_unsupported(dtype, batch, windows, heads, tokens, head_dim, wh, ww,
                                         max_smem)


def _limits(p: WindowProblem, device: CudaDevice | None) -> list[str]:
    sizes = (operator.index(s) for s in (p.batch, p.windows, p.heads, p.tokens, p.head_dim))
    why = _unsupported(str(p.dtype).removeprefix("torch."), *sizes, *p.window,
                       device.shared_memory_per_block_optin)
    return [why] if why else []


BACKEND = Backend(
    "cuda", run=extension.run, devices=("cuda",),
    dtypes=(torch.float32, torch.float16, torch.bfloat16),
    max_head_dim=getattr(extension._C, "cuda_max_head_dim", None),
    min_compute_capability=(8, 0), missing=_missing, limits=_limits,
    torch_ops=("poster_fast::wmca_fwd", "poster_fast::wmca_bwd"))
