"""Launchers of the Triton W-MCSA kernels: `forward` and `backward` on plain tensors.

Precision: fp32 inputs get fp32-accurate dots (PREC "ieee", run as 3xTF32 on tensor cores)
unless cuBLAS may use TF32 for fp32 matmuls (torch.backends.cuda.matmul.fp32_precision /
allow_tf32; off by default), then TF32. The kernels read the bias table as float32 stored
head-major (`table32`: one small copy, none for a table that already is; the triton backend
makes it once per forward, before the op); d_table comes back in the table's dtype and shape.
Launches: one for the forward, four for the backward (dq, which also computes delta; dkdv; the
d_table slots; their reduction).
"""
from __future__ import annotations

import torch
import triton

from .kernels import INTERPRET, _dkdv_kernel, _dq_kernel, _dtable_kernel, _dtable_reduce_kernel, _fwd_kernel

TABLE_PROGRAMS = 1024  # d_table kernel: at most about this many programs (slots)
TABLE_TILES = (16, 32, 64)  # d_table tile sides BT to choose from


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


def table32(table: torch.Tensor) -> torch.Tensor:
    """The (rows, H) table as float32 with each head's rows contiguous (strides (1, rows): the
    layout of a transposed (H, rows) buffer): one copy (differentiable), none when it already is."""
    if table.dtype == torch.float32 and table.t().is_contiguous():
        return table
    rows, heads = table.shape
    return torch.empty_strided((rows, heads), (1, rows), dtype=torch.float32, device=table.device).copy_(table)


def table_tiling(wh: int, ww: int) -> tuple[int, int, int]:
    """d_table tiles (BT, R, NT): side BT (>= Ww) holding R whole image rows, NT tiles per
    window; the fewest padded tokens NT*BT, then the largest tile."""
    options = []
    for bt in TABLE_TILES:
        if bt >= ww:
            rows = min(bt // ww, wh)
            nt = triton.cdiv(wh, rows)
            options.append((nt * bt, -bt, bt, rows, nt))
    return min(options)[2:]


def table_slots(bw: int, nt: int, heads: int) -> tuple[int, int]:
    """(ITERS, slots per head): each d_table program sums ITERS (window, tile pair) iterations of
    one tile offset. ITERS >= NT keeps the partial buffer linear in N (at most bw*NT + 2NT-1
    tiles per head), and about TABLE_PROGRAMS programs cap it at large batch."""
    iters = max(nt, triton.cdiv(bw * nt * nt * heads, TABLE_PROGRAMS))
    return iters, sum(triton.cdiv(bw * (nt - abs(d)), iters) for d in range(1 - nt, nt))


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor,
            wh: int, ww: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    b, h, n, d = q.shape
    out = torch.empty(k.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty(k.shape[:3], dtype=torch.float32, device=q.device)
    grid = lambda meta: (triton.cdiv(n, meta["BM"]) * b * h,)  # noqa: E731
    table = table32(table)
    _launch(_fwd_kernel)[grid](q, k, v, table, out, lse, *_strides(q, k, v, table),
                               h, k.shape[0] // b, n, d, scale, **_consts(q, wh, ww))
    return out, lse


def backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             table: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, wh: int, ww: int,
             scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    b, h, n, d = q.shape
    bw = k.shape[0]
    consts = _consts(q, wh, ww)
    tab = table32(table)
    strides = _strides(q, k, v, tab, dout)
    delta = torch.empty_like(lse)  # written by the dq kernel, read by the next two
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    common = (*strides, h, bw // b)
    _launch(_dq_kernel)[lambda meta: (triton.cdiv(n, meta["BM"]) * b * h,)](
        q, k, v, tab, dout, out, lse, delta, dq, *common, n, d, scale, **consts)
    _launch(_dkdv_kernel)[lambda meta: (triton.cdiv(n, meta["BN"]) * bw * h,)](
        q, k, v, tab, dout, lse, delta, dk, dv, *common, n, d, scale, **consts)
    # d_table: slots of ITERS (window, tile pair) iterations, then a fixed-order reduce.
    bt, rows, nt = table_tiling(wh, ww)
    iters, slots = table_slots(bw, nt, h)
    part = torch.empty((slots, h, bt, bt), dtype=torch.float32, device=q.device)
    _launch(_dtable_kernel)[(slots * h,)](
        q, k, v, tab, dout, lse, delta, part, *common, bw, nt, iters, n, d, scale, R=rows, BT=bt, **consts)
    dtable = torch.empty(table.shape, dtype=table.dtype, device=table.device)
    _launch(_dtable_reduce_kernel)[(2 * wh - 1, h)](part, dtable, *dtable.stride(), h, bw, nt, iters, WH=wh,
                                                    WW=ww, R=rows, BT=bt, TP=triton.next_power_of_2(2 * ww - 1))
    return dq, dk, dv, dtable
