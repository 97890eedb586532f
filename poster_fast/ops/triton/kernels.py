"""The Triton W-MCSA kernels and their autotune configs (launched by launch.py).

- `_fwd_kernel`, grid (query blocks * B*H,): loads its q block once, then for every window of
  its image runs an online softmax over key blocks; the bias is gathered from the table by the
  relative index computed from token coordinates. Stores out and the natural-log LSE.
- `_delta_kernel`: delta = rowsum(dO * O).
- `_dkdv_kernel`, grid (key blocks * B*nW*H,): recomputes P^T per query block; dK, dV.
- `_dq_kernel`, grid (query blocks * B*H,): dQ summed over the image's windows in window order.
- `_dtable_kernel`, grid (2Wh-1, H, window chunks): for row offset dh = hi - hj, the
  (row hi, row hj) block of dS is Toeplitz in (wi, wj): its diagonal sums are the table rows
  dh*(2Ww-1) + 0..2Ww-2. Each program recomputes those Ww x Ww blocks (several image rows
  packed in one >=16-wide tile for tl.dot) for its windows and rows, sums them in registers
  and writes the tile to its own slot of a partial buffer.
- `_dtable_reduce_kernel`, grid (2Wh-1, H): adds the chunk tiles in chunk order and sums the
  diagonals. No atomics anywhere, every sum has a fixed order: d_table is bitwise deterministic.
Grids put (block, batch*head) on axis 0 only (block fastest): CUDA caps axes 1 and 2 at 65535.
All kernels accumulate in fp32. Under TRITON_INTERPRET=1 every dot runs in fp32 (F32DOT: the
interpreter's bf16 dot is wrong), after rounding operands to the dtype the GPU would use.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _tuned(configs: list[triton.Config], key: list[str]):
    """jit + autotune; exactly one config (the first) under the interpreter."""
    def wrap(fn):
        return triton.autotune(configs[:1] if INTERPRET else configs, key=key)(triton.jit(fn))
    return wrap


def _cfgs(names: tuple[str, ...], rows: list[tuple[int, ...]]) -> list[triton.Config]:
    """Configs from rows (block sizes..., num_warps, num_stages)."""
    return [triton.Config(dict(zip(names, r[:-2])), num_warps=r[-2], num_stages=r[-1]) for r in rows]

# First row of each list is the interpreter's config.
_QUERY_CFGS = _cfgs(("BM", "BN"), [(32, 32, 4, 1), (64, 32, 4, 2), (64, 64, 4, 3),
                                   (128, 32, 4, 3), (128, 64, 8, 3)])
_KEY_CFGS = _cfgs(("BN", "BM"), [(32, 32, 4, 1), (64, 32, 4, 2), (64, 64, 4, 3),
                                 (128, 32, 8, 3), (128, 64, 8, 3)])
_TABLE_CFGS = _cfgs((), [(4, 1), (2, 2), (4, 2), (8, 2)])

# Device helpers. The interpreter re-patches triton.language on every nested @jit call
# (milliseconds each); as plain Python functions they run the same code without that cost.
_helper = (lambda fn: fn) if INTERPRET else triton.jit


@_helper
def _mm(a, b, PREC: tl.constexpr, F32DOT: tl.constexpr):
    if F32DOT:  # the interpreter's bf16 dot is wrong
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PREC)


@_helper
def _pos(tok, WW: tl.constexpr):
    """Token i -> hi*(2Ww-1) + wi, so rel(i, j) = _pos(i) - _pos(j) + (Wh-1)*(2Ww-1) + Ww-1."""
    return (tok // WW) * (2 * WW - 1) + tok % WW


@_helper
def _split(NB):
    """Axis-0 program id -> (batch*head row as int64, block index); the block index runs fastest."""
    pid = tl.program_id(0)
    return (pid // NB).to(tl.int64), pid % NB


@_helper
def _bias(tab_h, st_r, pos_q, pos_k, mask, WH: tl.constexpr, WW: tl.constexpr):
    """Bias tile from broadcastable query / key _pos values (either orientation)."""
    rel = pos_q - pos_k + ((WH - 1) * (2 * WW - 1) + WW - 1)
    return tl.load(tab_h + rel * st_r, mask=mask, other=0.0).to(tl.float32)


@_tuned(_QUERY_CFGS, key=["N", "D", "PREC"])
def _fwd_kernel(Q, K, V, TAB, OUT, LSE,
                sq_b, sq_h, sq_n, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d, st_r, st_h,
                H, NW, N, D, scale,
                WH: tl.constexpr, WW: tl.constexpr, BD: tl.constexpr, PREC: tl.constexpr,
                F32DOT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    bh, blk = _split(tl.cdiv(N, BM))
    b = bh // H
    h = (bh % H).to(tl.int32)
    offs_m = blk * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, BD)
    m_ok = offs_m < N
    d_ok = offs_d < D
    q_mask = m_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + b * sq_b + h * sq_h + offs_m[:, None] * sq_n + offs_d[None, :] * sq_d, mask=q_mask, other=0.0)
    pos_q = _pos(offs_m, WW)[:, None]
    tab_h = TAB + h * st_h
    arange_n = tl.arange(0, BN)
    k_off = arange_n[:, None] * sk_n + offs_d[None, :] * sk_d
    v_off = arange_n[:, None] * sv_n + offs_d[None, :] * sv_d
    for w in range(NW):  # q stays in registers for all windows of image b
        r = b * NW + w
        m_i = tl.full([BM], float("-inf"), tl.float32)
        l_i = tl.zeros([BM], tl.float32)
        acc = tl.zeros([BM, BD], tl.float32)
        for start in range(0, N, BN):
            offs_n = start + arange_n
            n_ok = offs_n < N
            kv_mask = n_ok[:, None] & d_ok[None, :]
            k = tl.load(K + r * sk_b + h * sk_h + start * sk_n + k_off, mask=kv_mask, other=0.0)
            v = tl.load(V + r * sv_b + h * sv_h + start * sv_n + v_off, mask=kv_mask, other=0.0)
            s = _mm(q, tl.trans(k), PREC, F32DOT) * scale
            s += _bias(tab_h, st_r, pos_q, _pos(offs_n, WW)[None, :], m_ok[:, None] & n_ok[None, :], WH, WW)
            s = tl.where(n_ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + _mm(p.to(v.dtype), v, PREC, F32DOT)
            m_i = m_new
        row = (r * H + h) * N
        tl.store(OUT + row * D + offs_m[:, None] * D + offs_d[None, :],
                 (acc / l_i[:, None]).to(OUT.dtype.element_ty), mask=q_mask)
        tl.store(LSE + row + offs_m, m_i + tl.log(l_i), mask=m_ok)


@triton.jit
def _delta_kernel(DO, OUT, DELTA, sdo_b, sdo_h, sdo_n, sdo_d, H, N, D,
                  BD: tl.constexpr, BM: tl.constexpr):
    rh, blk = _split(tl.cdiv(N, BM))
    offs_m = blk * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, BD)
    mask = (offs_m < N)[:, None] & (offs_d < D)[None, :]
    do = tl.load(DO + (rh // H) * sdo_b + (rh % H) * sdo_h + offs_m[:, None] * sdo_n + offs_d[None, :] * sdo_d,
                 mask=mask, other=0.0).to(tl.float32)
    o = tl.load(OUT + rh * N * D + offs_m[:, None] * D + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(DELTA + rh * N + offs_m, tl.sum(do * o, 1), mask=offs_m < N)


@_tuned(_KEY_CFGS, key=["N", "D", "PREC"])
def _dkdv_kernel(Q, K, V, TAB, DO, LSE, DELTA, DK, DV,
                 sq_b, sq_h, sq_n, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d, st_r, st_h,
                 sdo_b, sdo_h, sdo_n, sdo_d, H, NW, N, D, scale,
                 WH: tl.constexpr, WW: tl.constexpr, BD: tl.constexpr, PREC: tl.constexpr,
                 F32DOT: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr):
    rh, blk = _split(tl.cdiv(N, BN))
    r = rh // H
    h = (rh % H).to(tl.int32)
    offs_n = blk * BN + tl.arange(0, BN)
    offs_d = tl.arange(0, BD)
    n_ok = offs_n < N
    d_ok = offs_d < D
    kv_mask = n_ok[:, None] & d_ok[None, :]
    k = tl.load(K + r * sk_b + h * sk_h + offs_n[:, None] * sk_n + offs_d[None, :] * sk_d, mask=kv_mask, other=0.0)
    v = tl.load(V + r * sv_b + h * sv_h + offs_n[:, None] * sv_n + offs_d[None, :] * sv_d, mask=kv_mask, other=0.0)
    pos_k = _pos(offs_n, WW)[:, None]
    arange_m = tl.arange(0, BM)
    q_ptr = Q + (r // NW) * sq_b + h * sq_h + arange_m[:, None] * sq_n + offs_d[None, :] * sq_d
    do_ptr = DO + r * sdo_b + h * sdo_h + arange_m[:, None] * sdo_n + offs_d[None, :] * sdo_d
    row = (r * H + h) * N
    tab_h = TAB + h * st_h
    dk = tl.zeros([BN, BD], tl.float32)
    dv = tl.zeros([BN, BD], tl.float32)
    for start in range(0, N, BM):
        offs_m = start + arange_m
        m_ok = offs_m < N
        q_mask = m_ok[:, None] & d_ok[None, :]
        q = tl.load(q_ptr + start * sq_n, mask=q_mask, other=0.0)
        do = tl.load(do_ptr + start * sdo_n, mask=q_mask, other=0.0)
        lse = tl.load(LSE + row + offs_m, mask=m_ok, other=0.0)
        delta = tl.load(DELTA + row + offs_m, mask=m_ok, other=0.0)
        # No select needed: padded queries have dO = 0 and delta = 0, padded keys are not stored.
        s_t = _mm(k, tl.trans(q), PREC, F32DOT) * scale
        s_t += _bias(tab_h, st_r, _pos(offs_m, WW)[None, :], pos_k, n_ok[:, None] & m_ok[None, :], WH, WW)
        p_t = tl.exp(s_t - lse[None, :])
        dv += _mm(p_t.to(do.dtype), do, PREC, F32DOT)
        dp_t = _mm(v, tl.trans(do), PREC, F32DOT)
        dk += _mm((p_t * (dp_t - delta[None, :])).to(q.dtype), q, PREC, F32DOT)
    out = row * D + offs_n[:, None] * D + offs_d[None, :]
    tl.store(DK + out, (dk * scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=kv_mask)


@_tuned(_QUERY_CFGS, key=["N", "D", "PREC"])
def _dq_kernel(Q, K, V, TAB, DO, LSE, DELTA, DQ,
               sq_b, sq_h, sq_n, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d, st_r, st_h,
               sdo_b, sdo_h, sdo_n, sdo_d, H, NW, N, D, scale,
               WH: tl.constexpr, WW: tl.constexpr, BD: tl.constexpr, PREC: tl.constexpr,
               F32DOT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    bh, blk = _split(tl.cdiv(N, BM))
    b = bh // H
    h = (bh % H).to(tl.int32)
    offs_m = blk * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, BD)
    m_ok = offs_m < N
    d_ok = offs_d < D
    q_mask = m_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + b * sq_b + h * sq_h + offs_m[:, None] * sq_n + offs_d[None, :] * sq_d, mask=q_mask, other=0.0)
    pos_q = _pos(offs_m, WW)[:, None]
    tab_h = TAB + h * st_h
    arange_n = tl.arange(0, BN)
    k_off = arange_n[:, None] * sk_n + offs_d[None, :] * sk_d
    v_off = arange_n[:, None] * sv_n + offs_d[None, :] * sv_d
    dq = tl.zeros([BM, BD], tl.float32)
    for w in range(NW):  # fixed window order: deterministic sum over windows
        r = b * NW + w
        row = (r * H + h) * N
        do = tl.load(DO + r * sdo_b + h * sdo_h + offs_m[:, None] * sdo_n + offs_d[None, :] * sdo_d,
                     mask=q_mask, other=0.0)
        lse = tl.load(LSE + row + offs_m, mask=m_ok, other=0.0)[:, None]
        delta = tl.load(DELTA + row + offs_m, mask=m_ok, other=0.0)[:, None]
        for start in range(0, N, BN):
            offs_n = start + arange_n
            n_ok = offs_n < N
            kv_mask = n_ok[:, None] & d_ok[None, :]
            k = tl.load(K + r * sk_b + h * sk_h + start * sk_n + k_off, mask=kv_mask, other=0.0)
            v = tl.load(V + r * sv_b + h * sv_h + start * sv_n + v_off, mask=kv_mask, other=0.0)
            s = _mm(q, tl.trans(k), PREC, F32DOT) * scale
            s += _bias(tab_h, st_r, pos_q, _pos(offs_n, WW)[None, :], m_ok[:, None] & n_ok[None, :], WH, WW)
            p = tl.where(n_ok[None, :], tl.exp(s - lse), 0.0)  # padded keys: avoid inf * 0
            dp = _mm(do, tl.trans(v), PREC, F32DOT)
            dq += _mm((p * (dp - delta)).to(k.dtype), k, PREC, F32DOT)
    tl.store(DQ + (b * H + h) * N * D + offs_m[:, None] * D + offs_d[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=q_mask)


@_tuned(_TABLE_CFGS, key=["N", "D", "PREC"])
def _dtable_kernel(Q, K, V, TAB, DO, LSE, DELTA, PART,
                   sq_b, sq_h, sq_n, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d, st_r, st_h,
                   sdo_b, sdo_h, sdo_n, sdo_d, H, NW, BW, CHUNK, N, D, scale,
                   WH: tl.constexpr, WW: tl.constexpr, WP: tl.constexpr, R: tl.constexpr,
                   BD: tl.constexpr, PREC: tl.constexpr, F32DOT: tl.constexpr):
    """Sum of the (hi, hi - dh) Ww x Ww blocks of dS over the chunk's windows and rows hi.

    A WP x WP tile holds R = WP // Ww consecutive image rows: tile entry (a, c) is query
    token hi*Ww + a and key token (hi - dh)*Ww + c; only same-row entries (a//Ww == c//Ww)
    are kept, and for those the table column is a - c + Ww - 1.
    """
    dh_row = tl.program_id(0)
    dh = dh_row - (WH - 1)
    h = tl.program_id(1)
    chunk = tl.program_id(2)
    a = tl.arange(0, WP)
    offs_d = tl.arange(0, BD)
    d_ok = offs_d < D
    blk = a // WW
    in_tile = a < R * WW
    same = (blk[:, None] == blk[None, :]) & in_tile[:, None] & in_tile[None, :]
    bias = tl.load(TAB + h * st_h + (dh_row * (2 * WW - 1) + a[:, None] - a[None, :] + (WW - 1)) * st_r,
                   mask=same, other=0.0).to(tl.float32)
    q_off = a[:, None] * sq_n + offs_d[None, :] * sq_d
    do_off = a[:, None] * sdo_n + offs_d[None, :] * sdo_d
    k_off = a[:, None] * sk_n + offs_d[None, :] * sk_d
    v_off = a[:, None] * sv_n + offs_d[None, :] * sv_d
    hi_end = tl.minimum(WH + dh, WH)
    grad = tl.zeros([WP, WP], tl.float32)
    for r in range(chunk * CHUNK, tl.minimum(chunk * CHUNK + CHUNK, BW)):
        r64 = tl.cast(r, tl.int64)
        q_base = Q + (r64 // NW) * sq_b + h * sq_h
        k_base = K + r64 * sk_b + h * sk_h
        v_base = V + r64 * sv_b + h * sv_h
        do_base = DO + r64 * sdo_b + h * sdo_h
        row = (r64 * H + h) * N
        for hi in range(tl.maximum(dh, 0), hi_end, R):
            row_ok = in_tile & (blk < hi_end - hi)
            mask = row_ok[:, None] & d_ok[None, :]
            tq = hi * WW
            tk = (hi - dh) * WW
            q = tl.load(q_base + tq * sq_n + q_off, mask=mask, other=0.0)
            do = tl.load(do_base + tq * sdo_n + do_off, mask=mask, other=0.0)
            k = tl.load(k_base + tk * sk_n + k_off, mask=mask, other=0.0)
            v = tl.load(v_base + tk * sv_n + v_off, mask=mask, other=0.0)
            lse = tl.load(LSE + row + tq + a, mask=row_ok, other=0.0)
            delta = tl.load(DELTA + row + tq + a, mask=row_ok, other=0.0)
            s = _mm(q, tl.trans(k), PREC, F32DOT) * scale + bias
            # padded rows: avoid inf * 0 (entries across image rows are dropped by the reduce)
            p = tl.where(row_ok[:, None], tl.exp(s - lse[:, None]), 0.0)
            grad += p * (_mm(do, tl.trans(v), PREC, F32DOT) - delta[:, None])
    tl.store(PART + ((chunk * H + h) * (2 * WH - 1) + dh_row) * WP * WP + a[:, None] * WP + a[None, :], grad)


@triton.jit
def _dtable_reduce_kernel(PART, DTAB, sdt_r, sdt_h, H, CHUNKS,
                          WH: tl.constexpr, WW: tl.constexpr, WP: tl.constexpr, R: tl.constexpr,
                          TP: tl.constexpr):
    """d_table rows dh*(2Ww-1) + t of head h: chunk partials summed in chunk order, then the
    same-row entries of each tile summed along their diagonals t = a - c + Ww - 1."""
    dh_row = tl.program_id(0)
    h = tl.program_id(1)
    a = tl.arange(0, WP)
    t = tl.arange(0, TP)
    c = a[:, None] - t[None, :] + (WW - 1)
    ok = (a < R * WW)[:, None] & (t < 2 * WW - 1)[None, :] & (c >= 0) & (c < R * WW)
    ok = ok & (c // WW == (a // WW)[:, None])
    acc = tl.zeros([WP, TP], tl.float32)
    for i in range(CHUNKS):
        tile = PART + ((i * H + h) * (2 * WH - 1) + dh_row) * WP * WP
        acc += tl.load(tile + a[:, None] * WP + c, mask=ok, other=0.0)
    tl.store(DTAB + (dh_row * (2 * WW - 1) + t) * sdt_r + h * sdt_h,
             tl.sum(acc, 0).to(DTAB.dtype.element_ty), mask=t < 2 * WW - 1)
