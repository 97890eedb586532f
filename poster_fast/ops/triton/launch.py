"""Launchers of the Triton W-MCSA kernels: `forward` and `backward` on plain tensors.

Precision: on GPU, fp32 dots use "ieee" unless cuBLAS may use TF32 for fp32 matmuls
(torch.backends.cuda.matmul.fp32_precision / allow_tf32; off by default), then TF32.
"""
from __future__ import annotations

import torch
import triton

from .kernels import (INTERPRET, _delta_kernel, _dkdv_kernel, _dq_kernel, _dtable_kernel,
                      _dtable_reduce_kernel, _fwd_kernel)

TABLE_PROGRAMS = 1024  # d_table kernel: split the windows into chunks until about this many programs


def _launch(kernel):
    return kernel if INTERPRET else torch.library.wrap_triton(kernel)


def _strides(*tensors: torch.Tensor) -> list[int]:
    return [s for t in tensors for s in t.stride()]


def _allow_tf32() -> bool:
    """cuBLAS's fp32 matmul setting; torch >= 2.9 raises on reading the legacy `allow_tf32`
    after the new `fp32_precision` API set "tf32", so that one is read first."""
    prec = getattr(torch.backends.cuda.matmul, "fp32_precision", "none")
    return prec == "tf32" if prec in ("tf32", "ieee") else torch.backends.cuda.matmul.allow_tf32


def _consts(q: torch.Tensor, wh: int, ww: int) -> dict[str, object]:
    """Compile-time arguments shared by the kernels."""
    ieee = q.dtype == torch.float32 and not _allow_tf32()
    return dict(WH=wh, WW=ww, BD=max(16, triton.next_power_of_2(q.shape[-1])),
                PREC="ieee" if ieee else "tf32", F32DOT=INTERPRET)


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor,
            wh: int, ww: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    b, h, n, d = q.shape
    out = torch.empty(k.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty(k.shape[:3], dtype=torch.float32, device=q.device)
    grid = lambda meta: (triton.cdiv(n, meta["BM"]) * b * h,)  # noqa: E731
    _launch(_fwd_kernel)[grid](q, k, v, table, out, lse, *_strides(q, k, v, table),
                               h, k.shape[0] // b, n, d, scale, **_consts(q, wh, ww))
    return out, lse


def backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             table: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, wh: int, ww: int,
             scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    b, h, n, d = q.shape
    bw = k.shape[0]
    consts = _consts(q, wh, ww)
    strides = _strides(q, k, v, table, dout)
    delta = torch.empty_like(lse)
    _launch(_delta_kernel)[(triton.cdiv(n, 64) * bw * h,)](dout, out, delta, *dout.stride(), h, n, d,
                                                           BD=consts["BD"], BM=64)
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    common = (*strides, h, bw // b)
    _launch(_dkdv_kernel)[lambda meta: (triton.cdiv(n, meta["BN"]) * bw * h,)](
        q, k, v, table, dout, lse, delta, dk, dv, *common, n, d, scale, **consts)
    _launch(_dq_kernel)[lambda meta: (triton.cdiv(n, meta["BM"]) * b * h,)](
        q, k, v, table, dout, lse, delta, dq, *common, n, d, scale, **consts)
    # Enough (dh, head, chunk) programs to fill a GPU; the chunking depends on shapes only.
    chunks = min(bw, triton.cdiv(TABLE_PROGRAMS, (2 * wh - 1) * h))
    chunk = triton.cdiv(bw, chunks)
    chunks = triton.cdiv(bw, chunk)
    wp = max(16, triton.next_power_of_2(ww))
    rows = wp // ww  # image rows packed in one tile
    part = torch.empty((chunks, h, 2 * wh - 1, wp, wp), dtype=torch.float32, device=q.device)
    _launch(_dtable_kernel)[(2 * wh - 1, h, chunks)](
        q, k, v, table, dout, lse, delta, part, *common, bw, chunk, n, d, scale, WP=wp, R=rows, **consts)
    dtable = torch.empty(table.shape, dtype=table.dtype, device=table.device)
    _launch(_dtable_reduce_kernel)[(2 * wh - 1, h)](part, dtable, *dtable.stride(), h, chunks, WH=wh, WW=ww,
                                                    WP=wp, R=rows, TP=triton.next_power_of_2(2 * ww - 1))
    return dq, dk, dv, dtable
