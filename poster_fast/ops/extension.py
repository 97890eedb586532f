"""The compiled W-MCSA kernels (poster_fast._C) as the "cpu" and "cuda" backends.

`torch.ops.poster_fast.wmca_fwd(q, k, v, table, wh, ww, scale) -> (out, lse)` and
`wmca_bwd(dout, q, k, v, table, out, lse, wh, ww, scale) -> (dq, dk, dv, dtable)` are defined in
csrc/wmca.cpp. Here they get fake (meta) kernels for torch.compile and an autograd formula, so the
forward is differentiable in q, k, v and table. When the library is missing, or built without
CUDA, the backends stay registered and say why they cannot run.
"""
from __future__ import annotations

import torch

from .dispatch import Backend, register
from .validate import WindowProblem

try:
    from poster_fast import _C
except ImportError as exc:  # not built: every problem gets this reason
    _C = None
    _LOAD_ERROR = f"poster_fast._C is not built ({exc}); run `python setup.py build_ext --inplace`"
else:
    _LOAD_ERROR = ""

WITH_CUDA: bool = bool(getattr(_C, "with_cuda", False))
CUDA_MAX_HEAD_DIM = 128


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


if _C is not None:

    @torch.library.register_fake("poster_fast::wmca_fwd")
    def _fwd_fake(q, k, v, table, wh, ww, scale):
        return k.new_empty(k.shape, dtype=q.dtype), k.new_empty(k.shape[:3], dtype=_lse_dtype(q.dtype))

    @torch.library.register_fake("poster_fast::wmca_bwd")
    def _bwd_fake(dout, q, k, v, table, out, lse, wh, ww, scale):
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(table)

    def _setup_context(ctx, inputs, output) -> None:
        q, k, v, table, wh, ww, scale = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, table, out, lse)
        ctx.window, ctx.scale = (wh, ww), scale
        ctx.mark_non_differentiable(lse)

    def _backward(ctx, dout, _dlse):
        q, k, v, table, out, lse = ctx.saved_tensors
        dq, dk, dv, dtable = torch.ops.poster_fast.wmca_bwd(
            dout, q, k, v, table, out, lse, ctx.window[0], ctx.window[1], ctx.scale)
        return dq, dk, dv, dtable, None, None, None

    torch.library.register_autograd("poster_fast::wmca_fwd", _backward, setup_context=_setup_context)


def _run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb_table: torch.Tensor,
         p: WindowProblem) -> torch.Tensor:
    return torch.ops.poster_fast.wmca_fwd(q, k, v, rpb_table, p.window[0], p.window[1], p.scale)[0]


def _cpu_reasons(p: WindowProblem) -> list[str]:
    if _LOAD_ERROR:
        return [_LOAD_ERROR]
    if p.device.type != "cpu":
        return [f"inputs are on {p.device}; the cpu backend needs cpu tensors"]
    return []


def _cuda_reasons(p: WindowProblem) -> list[str]:
    if _LOAD_ERROR:
        return [_LOAD_ERROR]
    why = []
    if not WITH_CUDA:
        why.append("poster_fast._C was built without CUDA (needs a CUDA torch and nvcc at build time)")
    if p.device.type != "cuda":
        why.append(f"inputs are on {p.device}; the cuda backend needs cuda tensors")
    if p.dtype == torch.float64:
        why.append("float64 is not supported by the CUDA kernels (use float32, float16 or bfloat16)")
    if p.head_dim > CUDA_MAX_HEAD_DIM:
        why.append(f"head_dim {p.head_dim} > {CUDA_MAX_HEAD_DIM} is not supported by the CUDA kernels")
    return why


register(Backend("cpu", _run, _cpu_reasons, auto_devices=("cpu",)))
register(Backend("cuda", _run, _cuda_reasons, auto_devices=("cuda",)))
