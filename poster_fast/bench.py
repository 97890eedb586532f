"""`poster-fast bench`: how much faster, at the same answer.

Three tables, all measured in one process so every ratio compares numbers from the same run:
1. budget: parameters and MACs (thop = the paper's convention, fvcore) vs 43.7M / 8.4G;
2. W-MCSA op: per POSTER level and backend, fwd and fwd+bwd median time, ratio to the eager
   reference, TFLOP/s and max error against float64;
3. model: inference images/s, training-step time (zero_grad + fwd + loss + bwd + Adam step)
   and batch-1 latency, reference attention vs the fastest backend, fp32 and autocast.

Timing: warm-up calls first, then the median of `iters` calls; CUDA calls are timed with CUDA
events (CPU calls with perf_counter, which is synchronous there); inputs rotate over several
sets that together exceed the caches. FLOPs of the op: fwd = 4*B*nW*H*N*N*D (the two
matmuls); fwd+bwd = 3.5x fwd (backward = 5 matmuls, the flash-attention convention).
Error: max |out - ref64| / max |ref64|, ref64 = the reference run in float64 on the same inputs.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

LEVELS = {1: (28, 2), 2: (14, 4), 3: (7, 8)}  # POSTER level -> (window side, heads); D = 32
HEAD_DIM = 32
BASELINES = ("reference", "sdpa_mask", "flex")  # op rows; "reference" is the eager formula
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SECTIONS = ("budget", "ops", "infer", "train", "latency")
FWDBWD_FACTOR = 3.5
ROTATE_BYTES = 256 << 20  # rotated op inputs together exceed any L2 (H200: 60 MiB)
SCHEMA = 1

OpFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------- timing
def time_ms(fn: Callable[[int], object], device: torch.device, warmup: int, iters: int) -> float:
    """Median milliseconds of fn(i) over `iters` calls after `warmup` calls; i rotates inputs."""
    for i in range(warmup):
        fn(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(iters)]
        for i, (start, end) in enumerate(events):
            start.record()
            fn(warmup + i)
            end.record()
        torch.cuda.synchronize(device)
        times = [start.elapsed_time(end) for start, end in events]
    else:
        times = []
        for i in range(iters):
            t0 = time.perf_counter()
            fn(warmup + i)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


class Progress:
    """One line per step on stderr, with the elapsed time (stdout keeps only the tables)."""

    def __init__(self, enabled: bool = True) -> None:
        self.t0, self.enabled = time.perf_counter(), enabled

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- op level
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
        return LEVELS[self.level][0]

    @property
    def heads(self) -> int:
        return LEVELS[self.level][1]

    @property
    def tokens(self) -> int:
        return self.window ** 2

    @property
    def fwd_flops(self) -> float:
        return 4.0 * self.batch * self.heads * self.tokens ** 2 * HEAD_DIM  # nW = 1


def make_case(level: int, batch: int, dtype: torch.dtype, device: torch.device, seed: int = 0) -> OpCase:
    case = OpCase(level, batch, dtype, device)
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (batch, case.heads, case.tokens, HEAD_DIM)
    set_bytes = 3 * math.prod(shape) * torch.finfo(dtype).bits // 8
    n_sets = min(8, max(2, math.ceil(ROTATE_BYTES / set_bytes)))
    rand = lambda *s: torch.randn(*s, generator=gen, device=device).to(dtype).requires_grad_()
    case.sets = [(rand(*shape), rand(*shape), rand(*shape)) for _ in range(n_sets)]
    case.table = (0.5 * torch.randn((2 * case.window - 1) ** 2, case.heads, generator=gen, device=device)
                  ).to(dtype).requires_grad_()
    case.grad = torch.randn(shape, generator=gen, device=device).to(dtype)
    return case


def _sdpa_mask(window: int) -> OpFn:
    from .ops.reference import relative_position_bias

    def run(q, k, v, table):
        bias = relative_position_bias(table, (window, window)).unsqueeze(0).to(q.dtype)
        q_win = q.unsqueeze(1).expand(q.shape[0], k.shape[0] // q.shape[0], *q.shape[1:]).reshape(k.shape)
        return F.scaled_dot_product_attention(q_win, k, v, attn_mask=bias, scale=HEAD_DIM ** -0.5)
    return run


def _flex(window: int, device: torch.device) -> OpFn:
    import torch._dynamo
    from torch.nn.attention.flex_attention import flex_attention

    from .ops.reference import relative_position_index

    # One graph per level x dtype x grad mode: more than dynamo's default recompile limit.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    compiled = torch.compile(flex_attention, dynamic=False)
    index = relative_position_index((window, window), device)

    def run(q, k, v, table):
        def score_mod(score, b, h, q_idx, kv_idx):
            return score + table[index[q_idx, kv_idx], h]
        return compiled(q, k, v, score_mod=score_mod, scale=HEAD_DIM ** -0.5)
    return run


def op_function(name: str, case: OpCase) -> OpFn:
    """The forward of backend `name` (a registered backend, "sdpa_mask" or "flex") for `case`."""
    from .ops import window_cross_attention

    if name == "sdpa_mask":
        return _sdpa_mask(case.window)
    if name == "flex":
        return _flex(case.window, case.device)
    return lambda q, k, v, table: window_cross_attention(q, k, v, table, case.window, backend=name)


def skip_reasons(name: str, case: OpCase, requested: bool) -> list[str]:
    """Why `name` is not timed for `case` (empty when it is). Slow CPU paths run only on request."""
    from .ops import check_inputs, reasons

    q, k, v = case.sets[0]
    cpu = case.device.type == "cpu"
    if name == "sdpa_mask":
        return []
    if name == "flex":
        if cpu and not requested:
            return ["timed on CUDA only (on CPU: no backward, slow Inductor C++ compile); "
                    "request it with --backends flex"]
        return []
    why = reasons(name, check_inputs(q, k, v, case.table, case.window))
    if not why and name == "triton" and cpu and not requested:
        why = ["interpreter only on CPU (very slow); request it with --backends triton"]
    return why


def max_rel_error(fn: OpFn, case: OpCase) -> float:
    from .ops import check_inputs, reference

    q, k, v = (t.detach() for t in case.sets[0])
    with torch.no_grad():
        args64 = [t.double() for t in (q, k, v, case.table)]
        ref = reference.run(*args64, check_inputs(*args64, case.window))
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


def op_rows(cfg: "Config", progress: Progress) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for dtype_name in cfg.dtypes:
        for level in cfg.levels:
            case = make_case(level, cfg.batch, DTYPES[dtype_name], cfg.device)
            base: dict[str, Any] = {"level": level, "window": case.window, "heads": case.heads,
                                    "tokens": case.tokens, "head_dim": HEAD_DIM, "batch": cfg.batch,
                                    "dtype": dtype_name}
            eager: dict[str, Any] | None = None  # the reference row of this level
            for name in cfg.backends:
                row = {**base, "backend": name, "status": "skipped", "reason": ""}
                rows.append(row)
                why = skip_reasons(name, case, name in cfg.requested)
                if why:
                    row["reason"] = "; ".join(why)
                    continue
                progress(f"op level {level} {dtype_name} {name}")
                try:  # a failing backend (or only its backward) is reported; the run goes on
                    fn = op_function(name, case)
                    fwd_step, fwdbwd_step = op_steps(fn, case)
                    row.update(max_rel_err=max_rel_error(fn, case),
                               fwd_ms=time_ms(fwd_step, cfg.device, cfg.warmup, cfg.iters))
                    row.update(status="ok", fwd_tflops=case.fwd_flops / row["fwd_ms"] / 1e9)
                    row["fwdbwd_ms"] = time_ms(fwdbwd_step, cfg.device, cfg.warmup, cfg.iters)
                    row["fwdbwd_tflops"] = FWDBWD_FACTOR * case.fwd_flops / row["fwdbwd_ms"] / 1e9
                except Exception as exc:
                    msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                    if row["status"] == "ok":
                        row["reason"] = f"fwd+bwd failed: {msg}"
                    else:
                        row.update(status="error", reason=msg)
                    if cfg.device.type == "cuda":
                        torch.cuda.empty_cache()
                if name == "reference" and "fwdbwd_ms" in row:
                    eager = row
                for key in ("fwd", "fwdbwd"):
                    if eager and f"{key}_ms" in row:
                        row[f"{key}_speedup"] = eager[f"{key}_ms"] / row[f"{key}_ms"]
            del case
    return rows


def fastest_backend(ops: list[dict[str, Any]], device: torch.device) -> tuple[str, str]:
    """(backend, why): the registered non-reference backend with the least fwd+bwd time summed over
    the measured levels (first dtype), else the one `backend="auto"` picks for level 3."""
    from .ops import explain, registered

    first = ops[0]["dtype"] if ops else None
    totals: dict[str, float] = {}
    for name in sorted(set(registered()) - {"reference"}):
        rows = [r for r in ops if r["backend"] == name and r["dtype"] == first]
        if rows and all("fwdbwd_ms" in r for r in rows):
            totals[name] = sum(r["fwdbwd_ms"] for r in rows)
    if totals:
        best = min(totals, key=totals.get)
        return best, f"least op fwd+bwd time ({first}, summed over levels)"
    case = make_case(3, 1, torch.float32, device)
    q, k, v = case.sets[0]
    return str(explain(q, k, v, case.table, case.window)["chosen"]), "backend='auto' choice (no op timings)"


# ---------------------------------------------------------------------------- model level
class ModelBench:
    """A random-weight POSTERV2 with its optimizer and two rotated input batches, plus batch-1 inputs."""

    def __init__(self, device: torch.device, batch: int, seed: int = 0) -> None:
        from .model import POSTERV2

        self.device = device
        self.model = POSTERV2(num_classes=7).to(device)
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=1e-6)
        gen = torch.Generator(device=device).manual_seed(seed)
        self.images = [torch.randn(batch, 3, 224, 224, generator=gen, device=device) for _ in range(2)]
        self.labels = torch.randint(0, 7, (batch,), generator=gen, device=device)
        self.singles = [torch.randn(1, 3, 224, 224, generator=gen, device=device) for _ in range(2)]
        self.optimized: dict[tuple[str, bool], tuple[torch.nn.Module, torch.optim.Optimizer]] = {}

    def variant(self, backend: str, optimized: bool, train: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """The plain model with `backend`, or `poster_fast.optimize(...)` of it (built once per mode)."""
        if not optimized:
            self.model.attn_backend = backend
            return self.model, self.opt
        key = (backend, train)
        if key not in self.optimized:
            from .optimize import optimize

            fast = optimize(self.model, "train" if train else "inference", attn_backend=backend)
            opt = torch.optim.Adam([p for p in fast.parameters() if p.requires_grad], lr=1e-6)
            self.optimized[key] = fast, opt
        return self.optimized[key]

    def step(self, mode: str, backend: str, dtype: torch.dtype, optimized: bool = False) -> Callable[[int], None]:
        """A step taking a rotation index: "infer" (eval, no_grad), "latency" (the same at batch 1)
        or "train" (zero_grad + fwd + CE + bwd + Adam); fp16/bf16 run under autocast.
        `optimized` times `poster_fast.optimize(model, ...)` instead of the plain model."""
        model, opt = self.variant(backend, optimized, mode == "train")
        model.train(mode == "train")
        autocast = lambda: torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32)
        scaler = torch.amp.GradScaler(self.device.type, enabled=dtype == torch.float16)
        xs = self.singles if mode == "latency" else self.images

        def infer(i: int) -> None:
            with torch.no_grad(), autocast():
                model(xs[i % 2])

        def train(i: int) -> None:
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = F.cross_entropy(model(xs[i % 2]), self.labels)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        return train if mode == "train" else infer


def model_rows(cfg: "Config", fast: str, progress: Progress) -> tuple[list[dict[str, Any]], list[str]]:
    dev = cfg.device
    mb = ModelBench(dev, cfg.model_batch)
    rows: list[dict[str, Any]] = []
    variants = [("reference", "reference", False)] + ([(fast, fast, False)] if fast != "reference" else [])
    variants.append((f"optimize({fast})", fast, True))
    for dtype_name in cfg.dtypes:
        for label, name, optimized in variants:
            row: dict[str, Any] = {"backend": label, "dtype": dtype_name, "batch": cfg.model_batch}
            rows.append(row)
            timed = lambda mode: time_ms(mb.step(mode, name, DTYPES[dtype_name], optimized), dev,
                                         cfg.model_warmup, cfg.model_iters)
            if "infer" in cfg.sections:
                progress(f"model {dtype_name} {name} inference, batch {cfg.model_batch}")
                row["infer_ms"] = timed("infer")
                row["infer_img_s"] = cfg.model_batch / row["infer_ms"] * 1e3
            if "train" in cfg.sections:
                progress(f"model {dtype_name} {name} training step, batch {cfg.model_batch}")
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                row["train_ms"] = timed("train")
                if dev.type == "cuda":
                    row["train_peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
            if "latency" in cfg.sections:
                if cfg.model_batch == 1 and "infer_ms" in row:
                    row["latency_b1_ms"] = row["infer_ms"]  # the same measurement
                else:
                    progress(f"model {dtype_name} {name} batch-1 latency")
                    row["latency_b1_ms"] = timed("latency")
    for row in rows:
        ref = next(r for r in rows if r["dtype"] == row["dtype"] and r["backend"] == "reference")
        for key in ("infer_ms", "train_ms", "latency_b1_ms"):
            if key in row:
                row[key.replace("_ms", "_speedup")] = ref[key] / row[key]
    notes = ["no faster backend can run here: only the reference is timed"] if fast == "reference" else []
    return rows, notes


# --------------------------------------------------------------------------------- output
def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _f(row: dict[str, Any], key: str, fmt: str) -> str:
    return format(row[key], fmt) if key in row else "-"


def format_ops(rows: list[dict[str, Any]]) -> str:
    headers = ["level", "dtype", "backend", "fwd ms", "x eager", "TFLOP/s", "fwd+bwd ms", "x eager",
               "TFLOP/s", "max rel err"]
    body: list[list[str]] = []
    notes: dict[tuple[str, str, str], list[str]] = {}  # (backend, status, reason) -> where
    for r in rows:
        lvl = f"{r['level']} (W{r['window']} N{r['tokens']} H{r['heads']})"
        if r["reason"]:
            notes.setdefault((r["backend"], r["status"], r["reason"]), []).append(f"{r['level']}/{r['dtype']}")
        if r["status"] != "ok":
            body.append([lvl, r["dtype"], r["backend"]] + ["-"] * 7)
            continue
        body.append([lvl, r["dtype"], r["backend"], _f(r, "fwd_ms", ".3f"), _f(r, "fwd_speedup", ".2f"),
                     _f(r, "fwd_tflops", ".3f"), _f(r, "fwdbwd_ms", ".3f"), _f(r, "fwdbwd_speedup", ".2f"),
                     _f(r, "fwdbwd_tflops", ".3f"), _f(r, "max_rel_err", ".1e")])
    b = rows[0]["batch"] if rows else 0
    title = (f"W-MCSA op, batch {b}, D={HEAD_DIM}, nW=1: median ms; x eager = reference time / time; "
             f"TFLOP/s with fwd = 4BHN^2D, fwd+bwd = {FWDBWD_FACTOR}x fwd; error vs float64 reference")
    lines = [f"  {b} {'' if status == 'ok' else status + ' '}(level/dtype {', '.join(where)}): {why}" for (b, status, why), where in notes.items()]
    return "\n".join([title, _table(headers, body)] + (["not timed or partly:"] + lines if lines else []))


def format_model(rows: list[dict[str, Any]], notes: list[str], fast_why: str) -> str:
    headers = ["dtype", "backend", "batch", "infer ms", "img/s", "x ref", "train ms", "x ref",
               "peak GiB", "b1 ms", "x ref"]
    body = [[r["dtype"], r["backend"], str(r["batch"]), _f(r, "infer_ms", ".1f"), _f(r, "infer_img_s", ".1f"),
             _f(r, "infer_speedup", ".2f"), _f(r, "train_ms", ".1f"), _f(r, "train_speedup", ".2f"),
             _f(r, "train_peak_gib", ".2f"), _f(r, "latency_b1_ms", ".2f"), _f(r, "latency_b1_speedup", ".2f")]
            for r in rows]
    title = ("POSTER V2 model, random weights: eval inference (no_grad), training step "
             "(zero_grad + fwd + CE + bwd + Adam), batch-1 latency; median ms; "
             f"x ref = reference time / time; fast backend: {fast_why}")
    return "\n".join([title, _table(headers, body)] + [f"note: {n}" for n in notes])


# ----------------------------------------------------------------------------------- main
@dataclass
class Config:
    device: torch.device
    batch: int
    model_batch: int
    dtypes: list[str]
    levels: list[int]
    backends: list[str]
    requested: set[str]
    warmup: int
    iters: int
    model_warmup: int
    model_iters: int
    sections: list[str]
    quick: bool
    threads: int


def _csv(kind: Callable[[str], Any], choices: tuple | None = None) -> Callable[[str], list]:
    def parse(text: str) -> list:
        items = [kind(s.strip()) for s in text.split(",") if s.strip()]
        bad = [i for i in items if choices is not None and i not in choices]
        if not items or bad:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list from {', '.join(map(str, choices))}, got {text!r}")
        return list(dict.fromkeys(items))
    return parse


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value
    return parse


_positive, _nonnegative = _int_at_least(1), _int_at_least(0)


def resolve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Config:
    """Defaults by device and --quick; explicit options always win."""
    from .ops import registered

    known = BASELINES + tuple(n for n in registered() if n not in BASELINES)
    unknown = [b for b in args.backends or [] if b not in known]
    if unknown:
        parser.error(f"--backends: unknown backend {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to torch")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda, quick = device.type == "cuda", args.quick
    pick = lambda given, gpu, cpu, gpu_quick, cpu_quick: given if given is not None else (
        (gpu_quick if quick else gpu) if cuda else (cpu_quick if quick else cpu))
    batch = pick(args.batch, 144, 8, 16, 2)
    return Config(
        device=device, batch=batch,
        model_batch=args.model_batch or (args.batch if args.batch is not None else pick(None, 144, 2, 16, 1)),
        dtypes=args.dtypes or (["fp32", "bf16"] if cuda else ["fp32"]),
        levels=args.levels or list(LEVELS),
        backends=args.backends or list(known), requested=set(args.backends or ()),
        warmup=pick(args.warmup, 5, 1, 2, 1), iters=pick(args.iters, 20, 5, 5, 2),
        model_warmup=pick(args.warmup, 3, 1, 1, 1), model_iters=pick(args.iters, 10, 3, 3, 1),
        sections=args.sections or list(SECTIONS), quick=quick,
        # A shared 2-core box: one thread avoids OpenMP oversubscription (5x faster when busy).
        threads=args.threads or (1 if quick and not cuda else torch.get_num_threads()))


def command_line(args: argparse.Namespace) -> str:
    """The command, rebuilt from the parsed options (what RESULTS.md records)."""
    parts = ["poster-fast bench"] + (["--quick"] if args.quick else [])
    for name in ("batch", "model_batch", "dtypes", "levels", "backends", "sections", "warmup", "iters",
                 "threads", "device", "json"):
        value = getattr(args, name)
        if value is not None:
            parts.append(f"--{name.replace('_', '-')} " + (",".join(map(str, value)) if isinstance(value, list)
                                                           else str(value)))
    return " ".join(parts)


def meta(cfg: Config, command: str) -> dict[str, Any]:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    cuda = cfg.device.type == "cuda"
    return {
        "date": datetime.now().isoformat(timespec="seconds"),
        "device": cfg.device.type,
        "device_name": torch.cuda.get_device_name(cfg.device) if cuda else (platform.processor() or "cpu"),
        "cpu_threads": cfg.threads,
        "torch": torch.__version__, "triton": triton_version, "python": platform.python_version(),
        "command": command,
        "quick": cfg.quick, "batch": cfg.batch, "model_batch": cfg.model_batch, "dtypes": cfg.dtypes,
        "levels": cfg.levels, "backends": cfg.backends, "sections": cfg.sections,
        "warmup": cfg.warmup, "iters": cfg.iters, "model_warmup": cfg.model_warmup,
        "model_iters": cfg.model_iters, "timing": "median ms; CUDA events" if cuda else "median ms; perf_counter",
        "flops": f"op fwd = 4*B*nW*H*N*N*D, fwd+bwd = {FWDBWD_FACTOR} x fwd",
        "error": "max |out - ref64| / max |ref64|",
    }


def run(cfg: Config, command: str = "poster-fast bench", json_path: Path | None = None,
        progress: Progress | None = None) -> dict[str, Any]:
    """Run the selected sections, print the tables, return (and optionally write) the results."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run_sections(cfg, command, json_path, progress or Progress())
    finally:
        torch.set_num_threads(threads)


def _run_sections(cfg: Config, command: str, json_path: Path | None, progress: Progress) -> dict[str, Any]:
    if cfg.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    result: dict[str, Any] = {"schema": SCHEMA, "complete": False, "meta": meta(cfg, command),
                              "budget": None, "ops": [], "model": None}
    save = lambda: json_path and json_path.write_text(json.dumps(result, indent=1) + "\n")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"poster-fast bench: {result['meta']['device_name']} ({cfg.device.type}), torch {torch.__version__}, "
          f"triton {result['meta']['triton']}", flush=True)
    if "budget" in cfg.sections:
        from .budget import PAPER, budget, format_budget
        from .model import POSTERV2

        progress("budget (thop and fvcore counts on one 224x224 image)")
        b = budget(POSTERV2(num_classes=7))
        result["budget"] = {**asdict(b), "paper": PAPER}
        print("\n" + format_budget(b), flush=True)
        save()
    if "ops" in cfg.sections:
        result["ops"] = op_rows(cfg, progress)
        print("\n" + format_ops(result["ops"]), flush=True)
        save()
    if {"infer", "train", "latency"} & set(cfg.sections):
        fast, why = fastest_backend(result["ops"], cfg.device)
        rows, notes = model_rows(cfg, fast, progress)
        result["model"] = {"fast_backend": fast, "fast_backend_rule": why, "rows": rows, "notes": notes}
        print("\n" + format_model(rows, notes, f"{fast} ({why})"), flush=True)
    result["complete"] = True
    save()
    progress("done" + (f"; JSON in {json_path}" if json_path else ""))
    return result


def _main(args: argparse.Namespace) -> int:
    cfg = resolve(args, args.parser)
    run(cfg, command_line(args), args.json)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="time the W-MCSA backends and the model against the reference",
        description="Budget, W-MCSA op and model tables (GPU if present, else CPU; random weights).")
    p.add_argument("--quick", action="store_true",
                   help="small sizes and few repeats (under a minute on a 2-core CPU)")
    p.add_argument("--batch", type=_positive, help="op batch, and model batch unless --model-batch "
                   "(default 144 on CUDA, 8 on CPU; --quick: 16 / 2)")
    p.add_argument("--model-batch", type=_positive, help="model batch (default: --batch, or 2 on CPU, 1 with --quick)")
    p.add_argument("--dtypes", type=_csv(str, tuple(DTYPES)),
                   help="op dtypes and model autocast dtypes, e.g. fp32,bf16 (default fp32,bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--levels", type=_csv(int, tuple(LEVELS)), help="POSTER levels 1,2,3 (default all)")
    p.add_argument("--backends", type=_csv(str),
                   help=f"op backends to time (default all that run well here): {', '.join(BASELINES)} "
                        "and the registered ones (triton, cpu, cuda)")
    p.add_argument("--sections", type=_csv(str, SECTIONS), help=f"parts to run (default all): {','.join(SECTIONS)}")
    p.add_argument("--warmup", type=_nonnegative, help="warm-up calls before timing")
    p.add_argument("--iters", type=_positive, help="timed calls (the median is reported)")
    p.add_argument("--threads", type=_positive,
                   help="CPU threads for torch (default: torch's; 1 with --quick on CPU)")
    p.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda if available")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    p.set_defaults(func=_main, parser=p)
