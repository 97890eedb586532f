"""Fused Triton W-MCSA: flash-style forward and a backward that never materialises N x N.

Kernels (all accumulate in fp32; q/k/v may be fp32, fp16 or bf16, the table any float dtype):
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

Precision: on GPU, fp32 dots use "ieee" unless cuBLAS may use TF32 for fp32 matmuls
(torch.backends.cuda.matmul.fp32_precision / allow_tf32; off by default), then TF32. Under TRITON_INTERPRET=1 every dot runs in fp32 (the
interpreter's bf16 dot is wrong), after rounding operands to the dtype the GPU would use.

Ops: `poster_fast::wmca_triton_fwd` / `poster_fast::wmca_triton_bwd`, built with
`torch.library.triton_op` on GPU (Inductor sees the kernels). Under the interpreter triton_op's
fake-tensor tracing would run the kernels on fake tensors, so there they are plain
`custom_op`s with a `register_fake`.
"""
from __future__ import annotations

import os

import torch

from .dispatch import Backend, register
from .validate import WindowProblem

try:
    import triton
    import triton.language as tl
except ImportError:  # the backend then registers with a reason instead
    triton = tl = None

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
MAX_HEAD_DIM = 128
MAX_WINDOW_WIDTH = 64
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TABLE_PROGRAMS = 1024  # d_table kernel: split the windows into chunks until about this many programs


def not_supported_reasons(p: WindowProblem) -> list[str]:
    if triton is None:
        return ["triton is not installed"]
    why = []
    if p.device.type == "cpu" and not INTERPRET:
        why.append("CPU tensors need TRITON_INTERPRET=1 set before poster_fast is imported")
    elif p.device.type not in ("cpu", "cuda"):
        why.append(f"device {p.device.type} is not supported (cuda, or cpu under TRITON_INTERPRET=1)")
    if p.dtype not in DTYPES:
        why.append(f"dtype {p.dtype} is not supported (float32, float16, bfloat16)")
    if p.head_dim > MAX_HEAD_DIM:
        why.append(f"head_dim {p.head_dim} > {MAX_HEAD_DIM} is not supported")
    if p.window[1] > MAX_WINDOW_WIDTH:
        why.append(f"window width {p.window[1]} > {MAX_WINDOW_WIDTH} is not supported")
    return why


if triton is None:
    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb_table: torch.Tensor,
            p: WindowProblem) -> torch.Tensor:
        raise RuntimeError("triton is not installed")

    register(Backend("triton", run, not_supported_reasons, auto_devices=("cuda",)))
else:
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

    def _fwd_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor,
                  wh: int, ww: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        b, h, n, d = q.shape
        out = torch.empty(k.shape, dtype=q.dtype, device=q.device)
        lse = torch.empty(k.shape[:3], dtype=torch.float32, device=q.device)
        grid = lambda meta: (triton.cdiv(n, meta["BM"]) * b * h,)  # noqa: E731
        _launch(_fwd_kernel)[grid](q, k, v, table, out, lse, *_strides(q, k, v, table),
                                   h, k.shape[0] // b, n, d, scale, **_consts(q, wh, ww))
        return out, lse

    def _bwd_impl(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
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

    def _define(name: str, impl, fake):
        if INTERPRET:
            op = torch.library.custom_op(name, mutates_args=())(impl)
            op.register_fake(fake)
            return op
        return torch.library.triton_op(name, impl, mutates_args=())

    def _fwd_fake(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor,
                  wh: int, ww: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.empty(k.shape, dtype=q.dtype, device=q.device),
                torch.empty(k.shape[:3], dtype=torch.float32, device=q.device))

    def _bwd_fake(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  table: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, wh: int, ww: int,
                  scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return (torch.empty(q.shape, dtype=q.dtype, device=q.device),
                torch.empty(k.shape, dtype=k.dtype, device=k.device),
                torch.empty(v.shape, dtype=v.dtype, device=v.device),
                torch.empty(table.shape, dtype=table.dtype, device=table.device))

    wmca_fwd = _define("poster_fast::wmca_triton_fwd", _fwd_impl, _fwd_fake)
    wmca_bwd = _define("poster_fast::wmca_triton_bwd", _bwd_impl, _bwd_fake)

    def _setup_context(ctx, inputs, output) -> None:
        q, k, v, table, wh, ww, scale = inputs
        ctx.save_for_backward(q, k, v, table, *output)
        ctx.mark_non_differentiable(output[1])
        ctx.window, ctx.scale = (wh, ww), scale

    def _backward(ctx, dout: torch.Tensor, _dlse: torch.Tensor):
        q, k, v, table, out, lse = ctx.saved_tensors
        grads = wmca_bwd(dout, q, k, v, table, out, lse, *ctx.window, ctx.scale)
        return (*grads, None, None, None)

    wmca_fwd.register_autograd(_backward, setup_context=_setup_context)

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb_table: torch.Tensor,
            p: WindowProblem) -> torch.Tensor:
        return wmca_fwd(q, k, v, rpb_table, p.window[0], p.window[1], p.scale)[0]

    register(Backend("triton", run, not_supported_reasons, auto_devices=("cuda",)))
