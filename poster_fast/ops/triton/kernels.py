"""The Triton W-MCSA kernels and their autotune configs (launched by launch.py).

- `_fwd_kernel`, grid (query blocks * B*H,): loads its q block once, then for every window of
  its image runs an online softmax over key blocks; the bias is gathered from the float32 table,
  stored head-major (each head's rows contiguous, so neighbouring relative positions, which
  neighbouring lanes read, are neighbours in memory), by the relative index computed from token
  coordinates. Stores out and the natural-log LSE.
- `_dq_kernel`, grid (query blocks * B*H,): dQ summed over the image's windows in window order;
  it also computes delta = rowsum(dO * O) of its rows and stores it for the next two kernels
  (launched after it: one launch fewer than a kernel of its own).
- `_dkdv_kernel`, grid (key blocks * B*nW*H,): recomputes P^T per query block; dK, dV.
- `_dtable_kernel`, grid (slots * H,): tiles of BT tokens hold R whole image rows. The dS tile
  of query tile qt and key tile kt = qt - delta maps entry (a, c) to the table row
  (delta*R + a//Ww - c//Ww, a%Ww - c%Ww): the same map for every window and every tile pair with
  the same delta. A slot sums the dS tiles of ITERS consecutive (window, pair) iterations of one
  delta in registers (one add per score) and stores the sum in its own partial tile.
- `_dtable_reduce_kernel`, grid (2Wh-1, H): for table row group dh, adds the slot tiles of the
  (at most two) deltas that hold row pairs at distance dh, in slot order, then sums the
  diagonals. No atomics anywhere, every sum has a fixed order: d_table is bitwise deterministic.
Grids put (block, batch*head) on axis 0 (block fastest): CUDA caps axes 1 and 2 at 65535.

Precision: PREC is the fp32 matmul precision torch asks for. "ieee" (fp32 accuracy) runs the
fp32 dots on tensor cores as 3xTF32 (input_precision "tf32x3"); "tf32" is plain TF32; half
dots ignore it. All kernels accumulate in fp32. Under TRITON_INTERPRET=1 every dot runs in fp32
(F32DOT: the interpreter's bf16 dot is wrong) on operands rounded as the GPU rounds them, 3xTF32
included (_tf32x3_emulated).

Autotune configs: CONFIGS holds each kernel's full list; `may_pick` says which of them the
autotuner may pick for a dtype and arch (the others are pruned there); benchmarks/kernel_report.py
checks that none of those spills registers or overflows shared memory on sm_80 and sm_90.
POSTER_FAST_TRITON_CONFIGS="first" (read at import; default "all") leaves the autotuner only the
first config it may pick for the dtype and arch; the interpreter runs the first config of each
list (it runs one config only, and warps do not matter there).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
CONFIG_SET = os.environ.get("POSTER_FAST_TRITON_CONFIGS", "all")
if CONFIG_SET not in ("all", "first"):
    raise ValueError(f"POSTER_FAST_TRITON_CONFIGS={CONFIG_SET!r}: expected 'all' or 'first'")


def _cfgs(names: tuple[str, ...], rows: list[tuple[int, ...]]) -> list[triton.Config]:
    """Configs from rows (block sizes..., num_warps, num_stages)."""
    return [triton.Config(dict(zip(names, r[:-2])), num_warps=r[-2], num_stages=r[-1]) for r in rows]


# No fwd, dq or dkdv config wastes warps: the M side of their dots (BM for fwd and dq, BN for
# dkdv: the rows a program owns) is at least 16 x num_warps, so no two warps compute the same rows. dkdv's BM is the N side
# of two of its four dots: 64x16 (HGMMA n16 on sm_90) is kept for fp32 on sm_80 only, the one
# dkdv config that does not spill there (3xTF32 dots need the most registers; sm_80's mma.sync
# is n8 wide anyway).
CONFIGS: dict[str, list[triton.Config]] = {
    "_fwd_kernel": _cfgs(("BM", "BN"), [(64, 32, 4, 2), (64, 64, 4, 2), (128, 32, 8, 3), (128, 64, 8, 3)]),
    "_dkdv_kernel": _cfgs(("BN", "BM"), [(64, 32, 4, 1), (128, 32, 8, 3), (128, 64, 8, 2), (64, 16, 4, 1)]),
    "_dq_kernel": _cfgs(("BM", "BN"), [(64, 32, 4, 1), (64, 64, 4, 3), (128, 32, 8, 2), (128, 64, 8, 3)]),
    "_dtable_kernel": _cfgs((), [(8, 1), (4, 1), (8, 2), (4, 2)]),
}
_F32, _HALF = {torch.float32}, {torch.float16, torch.bfloat16}
_ALL = _F32 | _HALF
# Configs the autotuner must not pick: where ptxas spills registers (make kernel-report), and
# dkdv's 64x16 where a wider config fits. kernel -> config index -> {(dtype, arch)}.
EXCLUDED: dict[str, dict[int, set[tuple[torch.dtype, int]]]] = {
    "_fwd_kernel": {1: {(torch.float32, 80)}, 3: {(dt, 80) for dt in _ALL}},
    "_dkdv_kernel": {0: {(torch.float32, 80)}, 1: {(torch.float32, 80)},
                     2: {(dt, 80) for dt in _ALL} | {(torch.float32, 90)},
                     3: {(dt, 90) for dt in _ALL} | {(dt, 80) for dt in _HALF}},
    "_dq_kernel": {1: {(torch.float32, 80)}, 3: {(torch.float32, 80)}},
    "_dtable_kernel": {1: {(torch.float32, 80), (torch.float32, 90)}, 2: {(torch.float32, 80)},
                       3: {(torch.float32, 80), (torch.float32, 90)}},
}


def may_pick(kernel: str, index: int, dtype: torch.dtype, arch: int) -> bool:
    """Whether the autotuner may pick CONFIGS[kernel][index] for `dtype` inputs on sm_`arch`."""
    return (dtype, arch) not in EXCLUDED.get(kernel, {}).get(index, set())


def first_pick(kernel: str, dtype: torch.dtype, arch: int) -> int:
    """Index of the first config of CONFIGS[kernel] the autotuner may pick for dtype and arch."""
    return next(i for i in range(len(CONFIGS[kernel])) if may_pick(kernel, i, dtype, arch))


def _prune(kernel: str):
    """Autotune pruning by may_pick for the dtype of Q and the GPU the kernel runs on; with
    CONFIG_SET "first", the first config left."""
    def prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
        q = named_args["Q"]
        major, minor = torch.cuda.get_device_capability(q.device)
        arch, full = 10 * major + minor, CONFIGS[kernel]
        if CONFIG_SET == "first":
            return [full[first_pick(kernel, q.dtype, arch)]]
        return [c for c in configs if may_pick(kernel, full.index(c), q.dtype, arch)]
    return prune


def _tuned(key: list[str]):
    """jit + autotune over CONFIGS[name], pruned per dtype and arch; the first config only
    under the interpreter."""
    def wrap(fn):
        configs = CONFIGS[fn.__name__][:1] if INTERPRET else CONFIGS[fn.__name__]
        return triton.autotune(configs, key=key, prune_configs_by={"early_config_prune": _prune(fn.__name__)})(
            triton.jit(fn))
    return wrap


# Device helpers. The interpreter re-patches triton.language on every nested @jit call
# (milliseconds each); as plain Python functions they run the same code without that cost.
_helper = (lambda fn: fn) if INTERPRET else triton.jit


@_helper
def _tf32(x, ROUND: tl.constexpr):
    """fp32 -> TF32 bits: round to nearest, ties away (cvt.rna.tf32.f32), or truncate (what the
    tensor core reads of an fp32 register)."""
    bits = x.to(tl.int32, bitcast=True)
    if ROUND:
        bits = bits + 0x1000
    return (bits & -8192).to(tl.float32, bitcast=True)


@_helper
def _tf32x3_emulated(a, b):
    """Triton's "tf32x3" dot as the GPU computes it: big = rna(x), small = x - big (read as TF32),
    small products accumulated first, NaNs there zeroed, then the big product on top."""
    a_big = _tf32(a, True)
    b_big = _tf32(b, True)
    a_small = _tf32(a - a_big, False)
    b_small = _tf32(b - b_big, False)
    small = tl.dot(a_small, b_big, input_precision="ieee")
    small = tl.dot(a_big, b_small, small, input_precision="ieee")
    small = tl.where(small != small, 0.0, small)
    return tl.dot(a_big, b_big, small, input_precision="ieee")


@_helper
def _mm(a, b, PREC: tl.constexpr, F32DOT: tl.constexpr):
    """a @ b in fp32 (see the module docstring for PREC)."""
    if F32DOT:  # the interpreter: fp32 dots on the operands the GPU would see
        a = a.to(tl.float32)
        b = b.to(tl.float32)
        if PREC == "ieee":
            c = _tf32x3_emulated(a, b)
        else:
            c = tl.dot(a, b, input_precision="ieee")
    elif PREC == "ieee":
        c = tl.dot(a, b, input_precision="tf32x3")
    else:
        c = tl.dot(a, b, input_precision=PREC)
    return c


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
    return tl.load(tab_h + rel * st_r, mask=mask, other=0.0)


@_tuned(key=["N", "D", "PREC"])
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


@_tuned(key=["N", "D", "PREC"])
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


@_tuned(key=["N", "D", "PREC"])
def _dq_kernel(Q, K, V, TAB, DO, OUT, LSE, DELTA, DQ,
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
        o = tl.load(OUT + row * D + offs_m[:, None] * D + offs_d[None, :], mask=q_mask, other=0.0)
        delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)  # padded rows: 0
        tl.store(DELTA + row + offs_m, delta, mask=m_ok)  # for the dkdv and d_table kernels
        delta = delta[:, None]
        lse = tl.load(LSE + row + offs_m, mask=m_ok, other=0.0)[:, None]
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


@_helper
def _table_slot(slot, BW, NT, ITERS):
    """d_table slot -> (delta, chunk). Slots are ordered by tile offset delta = 1-NT .. NT-1;
    delta has NT-|delta| tile pairs per window, so cdiv(BW*(NT-|delta|), ITERS) chunks."""
    dlt = slot * 0 + (1 - NT)
    first = slot * 0
    for i in range(1 - NT, NT - 1):
        n = tl.cdiv(BW * (NT - tl.abs(i)), ITERS)
        step = (dlt == i) & (slot >= first + n)
        first = tl.where(step, first + n, first)
        dlt = tl.where(step, i + 1, dlt)
    return dlt, slot - first


@_tuned(key=["N", "D", "BT", "PREC"])
def _dtable_kernel(Q, K, V, TAB, DO, LSE, DELTA, PART,
                   sq_b, sq_h, sq_n, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d, st_r, st_h,
                   sdo_b, sdo_h, sdo_n, sdo_d, H, NW, BW, NT, ITERS, N, D, scale,
                   WH: tl.constexpr, WW: tl.constexpr, R: tl.constexpr, BT: tl.constexpr,
                   BD: tl.constexpr, PREC: tl.constexpr, F32DOT: tl.constexpr):
    """Sum of the dS tiles of one slot: ITERS (window, tile pair) iterations of one delta.

    Tile t covers tokens t*R*Ww + a, a < R*Ww (image rows t*R .. t*R+R-1). Iteration `it` is
    window it // pairs and query tile max(delta, 0) + it % pairs, key tile = query tile - delta.
    """
    pid = tl.program_id(0)
    h = pid % H
    dlt, chunk = _table_slot(pid // H, BW, NT, ITERS)
    pairs = NT - tl.abs(dlt)
    a = tl.arange(0, BT)
    offs_d = tl.arange(0, BD)
    d_ok = offs_d < D
    row = a // WW
    col = a % WW
    in_tile = a < R * WW
    # the bias tile is the same for every iteration of the slot
    dh = dlt * R + row[:, None] - row[None, :]
    bias_ok = in_tile[:, None] & in_tile[None, :] & (dh > -WH) & (dh < WH)
    bias = tl.load(TAB + h * st_h + ((dh + WH - 1) * (2 * WW - 1) + col[:, None] - col[None, :] + WW - 1) * st_r,
                   mask=bias_ok, other=0.0)
    q_off = a[:, None] * sq_n + offs_d[None, :] * sq_d
    do_off = a[:, None] * sdo_n + offs_d[None, :] * sdo_d
    k_off = a[:, None] * sk_n + offs_d[None, :] * sk_d
    v_off = a[:, None] * sv_n + offs_d[None, :] * sv_d
    grad = tl.zeros([BT, BT], tl.float32)
    for it in range(chunk * ITERS, tl.minimum(chunk * ITERS + ITERS, BW * pairs)):
        r = (it // pairs).to(tl.int64)
        tq = (tl.maximum(dlt, 0) + it % pairs) * (R * WW)
        tk = tq - dlt * (R * WW)
        q_ok = in_tile & (tq + a < N)
        k_ok = in_tile & (tk + a < N)
        q_mask = q_ok[:, None] & d_ok[None, :]
        k_mask = k_ok[:, None] & d_ok[None, :]
        q = tl.load(Q + (r // NW) * sq_b + h * sq_h + tq * sq_n + q_off, mask=q_mask, other=0.0)
        do = tl.load(DO + r * sdo_b + h * sdo_h + tq * sdo_n + do_off, mask=q_mask, other=0.0)
        k = tl.load(K + r * sk_b + h * sk_h + tk * sk_n + k_off, mask=k_mask, other=0.0)
        v = tl.load(V + r * sv_b + h * sv_h + tk * sv_n + v_off, mask=k_mask, other=0.0)
        row_lse = (r * H + h) * N + tq
        lse = tl.load(LSE + row_lse + a, mask=q_ok, other=0.0)
        delta = tl.load(DELTA + row_lse + a, mask=q_ok, other=0.0)
        s = _mm(q, tl.trans(k), PREC, F32DOT) * scale + bias
        # padded rows and columns: p = 0 (avoids inf * 0 and the -p * delta of padded keys)
        p = tl.where(q_ok[:, None] & k_ok[None, :], tl.exp(s - lse[:, None]), 0.0)
        grad += p * (_mm(do, tl.trans(v), PREC, F32DOT) - delta[:, None])
    tl.store(PART + pid.to(tl.int64) * (BT * BT) + a[:, None] * BT + a[None, :], grad)


@triton.jit
def _dtable_reduce_kernel(PART, DTAB, sdt_r, sdt_h, H, BW, NT, ITERS,
                          WH: tl.constexpr, WW: tl.constexpr, R: tl.constexpr, BT: tl.constexpr,
                          TP: tl.constexpr):
    """d_table rows dh*(2Ww-1) + t of head h, dh = program_id(0) - (Wh-1): the slots of every
    delta with row pairs at distance dh (query tile row rq, key tile row rq - e, e = dh - delta*R)
    in slot order, their entries (rq*Ww + wi, (rq-e)*Ww + wi - t + Ww-1) summed over rq and wi."""
    dh = tl.program_id(0) - (WH - 1)
    h = tl.program_id(1)
    a = tl.arange(0, BT)
    t = tl.arange(0, TP)
    rq = a // WW
    wj = (a % WW)[:, None] - t[None, :] + (WW - 1)
    ok = (a < R * WW)[:, None] & (t < 2 * WW - 1)[None, :] & (wj >= 0) & (wj < WW)
    acc = tl.zeros([BT, TP], tl.float32)
    first = h * 0
    for i in range(1 - NT, NT):
        n = tl.cdiv(BW * (NT - tl.abs(i)), ITERS)
        e = dh - i * R
        rk = rq - e
        mask = ok & ((rk >= 0) & (rk < R))[:, None]
        cols = a[:, None] * BT + rk[:, None] * WW + wj
        last = tl.where((e > -R) & (e < R), first + n, first)  # deltas without such pairs: no slots
        for slot in range(first, last):
            acc += tl.load(PART + (slot * H + h).to(tl.int64) * (BT * BT) + cols, mask=mask, other=0.0)
        first += n
    tl.store(DTAB + ((dh + WH - 1) * (2 * WW - 1) + t) * sdt_r + h * sdt_h,
             tl.sum(acc, 0).to(DTAB.dtype.element_ty), mask=t < 2 * WW - 1)
