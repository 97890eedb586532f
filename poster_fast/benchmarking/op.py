"""W-MCSA op rows: one per POSTER level, dtype and backend, with times, errors and floors.

Floors, per pass, for B images, H heads, N = Wh*Ww tokens, D = 32, nW = 1 window per image:
- FLOPs: fwd = 4*B*nW*H*N^2*D (the two matmuls); fwd+bwd = 3.5 x fwd (the backward's five
  matmuls, the flash-attention convention); softmax and bias work are not counted.
- bytes moved, the minimum any implementation must read or write once: fwd reads q, k, v and
  the table and writes out; fwd+bwd adds the forward's LSE (fp32, written once, read once) and
  the backward's reads of q, k, v, out, dO and the table and writes of dq, dk, dv and d_table.
  With E the element size of the dtype, T of the table's: fwd = E*(Q + 3*KV) + T*t and
  fwd+bwd = E*(3*Q + 9*KV) + 3*T*t + 8*L, where Q = B*H*N*D, KV = B*nW*H*N*D, t = table
  entries, L = B*nW*H*N.
Achieved rates divide these by the median time; "% of peak" compares them with the card's
dense peak for the dtype and its HBM bandwidth (cards.py); unknown cards and CPUs get None.
Error: max |out - ref64| / max |ref64|, ref64 = the reference run in float64 on the same inputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .. import ops
from .cards import Card
from .config import BASELINES, LEVELS, TIMED_LAST, Config
from .timing import Deadline, Progress, time_ms

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PASSES = ("fwd", "fwdbwd")
FWDBWD_FACTOR = 3.5
ROTATE_BYTES = 256 << 20  # rotated op inputs together exceed any L2 (H200: 60 MiB)

OpFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Row = dict[str, Any]


@dataclass
class OpCase:
    """Inputs of one POSTER level: `sets` rotated (q, k, v) triples, one shared bias table."""

    level: int
    batch: int
    dtype: torch.dtype
    device: torch.device
    sets: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    table: torch.Tensor | None = None
    grad: torch.Tensor | None = None

    @property
    def window(self) -> int:
        return LEVELS[self.level].window

    @property
    def heads(self) -> int:
        return LEVELS[self.level].heads

    @property
    def head_dim(self) -> int:
        return LEVELS[self.level].head_dim

    @property
    def tokens(self) -> int:
        return self.window ** 2

    @property
    def fwd_flops(self) -> float:
        return 4.0 * self.batch * self.heads * self.tokens ** 2 * self.head_dim  # nW = 1

    def flops(self, pass_: str) -> float:
        return self.fwd_flops * (FWDBWD_FACTOR if pass_ == "fwdbwd" else 1.0)

    def bytes_moved(self, pass_: str) -> float:
        """The minimum bytes the pass reads and writes (module docstring)."""
        e, t_e = _itemsize(self.dtype), _itemsize(self.table.dtype)
        q = self.batch * self.heads * self.tokens * self.head_dim
        kv = q  # nW = 1
        table, lse = self.table.numel(), self.batch * self.heads * self.tokens
        if pass_ == "fwd":
            return e * (q + 3 * kv) + t_e * table
        return e * (3 * q + 9 * kv) + 3 * t_e * table + 8 * lse


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def make_case(level: int, batch: int, dtype: torch.dtype, device: torch.device, seed: int = 0) -> OpCase:
    case = OpCase(level, batch, dtype, device)
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (batch, case.heads, case.tokens, case.head_dim)
    set_bytes = 3 * math.prod(shape) * _itemsize(dtype)
    n_sets = min(8, max(2, math.ceil(ROTATE_BYTES / set_bytes)))
    rand = lambda *s: torch.randn(*s, generator=gen, device=device).to(dtype).requires_grad_()
    case.sets = [(rand(*shape), rand(*shape), rand(*shape)) for _ in range(n_sets)]
    case.table = (0.5 * torch.randn((2 * case.window - 1) ** 2, case.heads, generator=gen, device=device)
                  ).to(dtype).requires_grad_()
    case.grad = torch.randn(shape, generator=gen, device=device).to(dtype)
    return case


# ------------------------------------------------------------------------------ backends
def fused_backends() -> list[str]:
    """The registered backends other than the baselines, in the registry's order (ops.BACKENDS)."""
    return [n for n in ops.registered() if n not in BASELINES]


def known_backends() -> list[str]:
    """Every name `--backends` accepts, in timing order: fused first, then the baselines."""
    return fused_backends() + list(BASELINES)


def _sdpa_mask(window: int) -> OpFn:
    from ..ops.reference import relative_position_bias

    def run(q, k, v, table):
        bias = relative_position_bias(table, (window, window)).unsqueeze(0).to(q.dtype)
        q_win = q.unsqueeze(1).expand(q.shape[0], k.shape[0] // q.shape[0], *q.shape[1:]).reshape(k.shape)
        return F.scaled_dot_product_attention(q_win, k, v, attn_mask=bias, scale=q.shape[-1] ** -0.5)
    return run


def _flex(window: int, device: torch.device) -> OpFn:
    import torch._dynamo
    from torch.nn.attention.flex_attention import flex_attention

    from ..ops.reference import relative_position_index

    # One graph per level x dtype x grad mode: more than dynamo's default recompile limit.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    compiled = torch.compile(flex_attention, dynamic=False)
    index = relative_position_index((window, window), device)

    def run(q, k, v, table):
        def score_mod(score, b, h, q_idx, kv_idx):
            return score + table[index[q_idx, kv_idx], h]
        return compiled(q, k, v, score_mod=score_mod, scale=q.shape[-1] ** -0.5)
    return run


def op_function(name: str, case: OpCase) -> OpFn:
    """The forward of backend `name` (registered, or the baseline "sdpa_mask" / "flex") for `case`."""
    if name == "sdpa_mask":
        return _sdpa_mask(case.window)
    if name == "flex":
        return _flex(case.window, case.device)
    return lambda q, k, v, table: ops.window_cross_attention(q, k, v, table, case.window, backend=name)


def skip_reasons(name: str, case: OpCase, requested: bool) -> list[str]:
    """Why `name` is not timed for `case` (empty when it is). A backend that runs here but that
    `backend="auto"` would not pick (Triton under the CPU interpreter), and FlexAttention on the
    CPU, are slow: they are timed only when named with --backends."""
    if name == "sdpa_mask":
        return []
    if name == "flex":
        if case.device.type == "cpu" and not requested:
            return ["timed on CUDA only (on CPU: no backward, slow Inductor C++ compile); "
                    "request it with --backends flex"]
        return []
    q, k, v = case.sets[0]
    problem = ops.check_inputs(q, k, v, case.table, case.window)
    why = ops.reasons(name, problem)
    if not why and not requested:
        auto_why = ops.reasons(name, problem, auto=True)
        if auto_why:
            why = [f"{'; '.join(auto_why)}: slow here, request it with --backends {name}"]
    return why


def max_rel_error(fn: OpFn, case: OpCase) -> float:
    q, k, v = (t.detach() for t in case.sets[0])
    with torch.no_grad():
        args64 = [t.double() for t in (q, k, v, case.table)]
        ref = ops.reference.run(*args64, ops.check_inputs(*args64, case.window))
        out = fn(q, k, v, case.table.detach()).double()
    return float((out - ref).abs().max() / ref.abs().max())


def op_steps(fn: OpFn, case: OpCase) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """(fwd, fwd+bwd) steps taking a rotation index; the backward fills the gradients of q, k, v
    and the table."""
    sets, table, grad = case.sets, case.table, case.grad
    # Detached views for the forward: some paths (flex on CPU) refuse inputs that require grad.
    plain, plain_table = [tuple(t.detach() for t in s) for s in sets], table.detach()

    def fwd(i: int) -> None:
        with torch.no_grad():
            fn(*plain[i % len(plain)], plain_table)

    def fwd_bwd(i: int) -> None:
        q, k, v = sets[i % len(sets)]
        for t in (q, k, v, table):
            t.grad = None
        fn(q, k, v, table).backward(grad)

    return fwd, fwd_bwd


# ---------------------------------------------------------------------------------- rows
def plan_rows(cfg: Config) -> tuple[list[Row], list[Row]]:
    """The op rows of a run, all "pending": (rows timed first, rows timed last: flex). Within
    each: per dtype, per level, the backends in `cfg.backends` order (fused first)."""
    def rows(names: list[str]) -> list[Row]:
        return [_row(level, cfg.batch, dtype, name)
                for dtype in cfg.dtypes for level in cfg.levels for name in names]
    return (rows([b for b in cfg.backends if b not in TIMED_LAST]),
            rows([b for b in cfg.backends if b in TIMED_LAST]))


def _row(level: int, batch: int, dtype: str, backend: str) -> Row:
    shape = LEVELS[level]
    return {"level": level, "window": shape.window, "heads": shape.heads, "tokens": shape.tokens,
            "head_dim": shape.head_dim, "batch": batch, "dtype": dtype, "backend": backend,
            "status": "pending", "reason": ""}


def measure_rows(rows: list[Row], cfg: Config, card: Card | None, deadline: Deadline,
                 save: Callable[[], None], progress: Progress) -> None:
    """Time `rows` in order, saving after each; inputs are built once per (dtype, level)."""
    case: OpCase | None = None
    for row in rows:
        if deadline.passed():
            row.update(status="cut", reason=deadline.reason)
            continue
        if case is None or (case.level, case.dtype) != (row["level"], DTYPES[row["dtype"]]):
            case = None  # free the previous inputs first
            case = make_case(row["level"], cfg.batch, DTYPES[row["dtype"]], cfg.device)
        add_floors(row, case, card)
        why = skip_reasons(row["backend"], case, row["backend"] in cfg.requested)
        if why:
            row.update(status="skipped", reason="; ".join(why))
        else:
            progress(f"op level {row['level']} {row['dtype']} {row['backend']}")
            row["status"] = "running"
            save()
            measure_row(row, case, cfg, card)
        save()


def measure_row(row: Row, case: OpCase, cfg: Config, card: Card | None) -> None:
    """Error, fwd and fwd+bwd times of one backend. A failure (or a cut) is recorded in the row
    with what was timed before it; an interrupt is re-raised after that."""
    try:
        fn = op_function(row["backend"], case)
        fwd_step, fwdbwd_step = op_steps(fn, case)
        row["max_rel_err"] = max_rel_error(fn, case)
        add_rates(row, "fwd", time_ms(fwd_step, cfg.device, cfg.warmup, cfg.iters), case, card)
        add_rates(row, "fwdbwd", time_ms(fwdbwd_step, cfg.device, cfg.warmup, cfg.iters), case, card)
        row["status"] = "ok"
    except KeyboardInterrupt:
        _stopped(row, "cut", "interrupted")
        raise
    except Exception as exc:
        _stopped(row, "error", f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
        if case.device.type == "cuda":
            torch.cuda.empty_cache()


def _stopped(row: Row, status: str, msg: str) -> None:
    row.update(status=status, reason=f"fwd+bwd: {msg}" if "fwd_ms" in row else msg)


def add_floors(row: Row, case: OpCase, card: Card | None) -> None:
    """The problem's FLOPs and minimum bytes per pass, and the card's peaks for its dtype."""
    for p in PASSES:
        row[f"{p}_flops"], row[f"{p}_bytes"] = case.flops(p), case.bytes_moved(p)
    row["peak_tflops"] = card.peak_tflops(row["dtype"]) if card else None
    row["peak_gb_s"] = card.hbm_gb_s if card else None


def add_rates(row: Row, pass_: str, ms: float, case: OpCase, card: Card | None) -> None:
    """Time, achieved TFLOP/s and GB/s of one pass, and their % of the card's peaks (None when
    the card is unknown)."""
    tflops, gb_s = case.flops(pass_) / ms / 1e9, case.bytes_moved(pass_) / ms / 1e6
    row.update({f"{pass_}_ms": ms, f"{pass_}_tflops": tflops, f"{pass_}_gb_s": gb_s,
                f"{pass_}_flops_pct": 100 * tflops / card.peak_tflops(row["dtype"]) if card else None,
                f"{pass_}_bw_pct": 100 * gb_s / card.hbm_gb_s if card else None})


def link_speedups(rows: list[Row]) -> None:
    """x eager per pass: the same run's reference time for the row's (dtype, level) / its time."""
    eager = {(r["dtype"], r["level"]): r for r in rows if r["backend"] == "reference"}
    for row in rows:
        ref = eager.get((row["dtype"], row["level"]))
        for p in PASSES:
            if ref and f"{p}_ms" in ref and f"{p}_ms" in row:
                row[f"{p}_speedup"] = ref[f"{p}_ms"] / row[f"{p}_ms"]


def fastest_backend(rows: list[Row], device: torch.device) -> tuple[str, str]:
    """(backend, why): the fused backend with the least fwd+bwd time summed over the measured
    levels (first dtype), else the one `backend="auto"` picks for level 3."""
    first = rows[0]["dtype"] if rows else None
    totals: dict[str, float] = {}
    for name in fused_backends():
        timed = [r for r in rows if r["backend"] == name and r["dtype"] == first]
        if timed and all("fwdbwd_ms" in r for r in timed):
            totals[name] = sum(r["fwdbwd_ms"] for r in timed)
    if totals:
        best = min(totals, key=totals.get)
        return best, f"least op fwd+bwd time ({first}, summed over levels)"
    case = make_case(3, 1, torch.float32, device)
    q, k, v = case.sets[0]
    return str(ops.explain(q, k, v, case.table, case.window)["chosen"]), "backend='auto' choice (no op timings)"
