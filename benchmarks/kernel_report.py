"""Offline resource report of the GPU kernels, no GPU needed: registers, spills and shared memory.

Triton: the launchers (poster_fast/ops/triton/launch.py) run on CPU tensors of POSTER's three
level shapes with a recording launcher, so every kernel is seen with the arguments (and hence
the integer specialisations) of a real call; each is then compiled with `triton.compile` for
sm_80 and sm_90 and every config of its full autotune list, in float32, float16 and bfloat16.
Registers and spills come from ptxas -v (the triton wheel's ptxas), shared memory from Triton's
kernel metadata. CUDA: nvcc -Xptxas -v on csrc/cuda/*.cu for both archs (static shared memory
only: the launcher sizes the dynamic part and refuses tiles beyond the device's limit).

Exit status 1 when a Triton config that the autotuner may pick (kernels.may_pick: the configs
in the kernel's list for that dtype and arch) spills or needs more shared memory than the arch
allows. Usage: python benchmarks/kernel_report.py [--jobs N] [--markdown FILE] [--no-cuda]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Compile for the GPU, not the interpreter, with the full config lists.
os.environ.pop("TRITON_INTERPRET", None)
os.environ["POSTER_FAST_TRITON_CONFIGS"] = "all"
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import triton  # noqa: E402
from triton import knobs  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: E402

from poster_fast.model import LEVELS as MODEL_LEVELS  # noqa: E402
from poster_fast.ops.triton import kernels, launch  # noqa: E402

ARCHS = (80, 90)
# Largest dynamic shared memory one block may opt into (CUDA programming guide, compute capabilities).
MAX_SHARED = {80: 163 * 1024, 90: 227 * 1024}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# POSTER's levels: (batch, heads, window, head_dim); the batch only scales the grid.
LEVELS = {f"L{i}": (2, level.heads, (level.window, level.window), level.head_dim)
          for i, level in enumerate(MODEL_LEVELS, start=1)}


@dataclass(frozen=True)
class Job:
    kernel: str
    config: int | None  # index into the kernel's full config list; None: not autotuned
    dtype: str
    level: str
    arch: int


@dataclass
class Figures:
    regs: int
    spill: int  # bytes, stores + loads
    stack: int
    shared: int
    seconds: float


def _record() -> dict[tuple[str, str], list[tuple[object, tuple, dict]]]:
    """(dtype, level) -> the (kernel, args, kwargs) of every launch of forward + backward."""
    calls: dict[tuple[str, str], list] = {}
    current: list = []

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *args, **kwargs: current.append((self.kernel, args, kwargs))

    real = launch._launch
    launch._launch = Recorder
    try:
        for dname, dtype in DTYPES.items():
            for level, (b, h, (wh, ww), d) in LEVELS.items():
                current = []
                q = torch.zeros(b, h, wh * ww, d, dtype=dtype)
                table = torch.zeros((2 * wh - 1) * (2 * ww - 1), h, dtype=dtype)
                out, lse = launch.forward(q, q, q, table, wh, ww, d ** -0.5)
                launch.backward(q, q, q, q, table, out, lse, wh, ww, d ** -0.5)
                calls[dname, level] = current
    finally:
        launch._launch = real
    return calls


CALLS: dict = {}


def _jit(kernel) -> JITFunction:
    """The JITFunction of a jit kernel or of an autotuned one."""
    return kernel if isinstance(kernel, JITFunction) else kernel.fn


def _name(kernel) -> str:
    return _jit(kernel).__name__


def _full_configs(name: str) -> list[triton.Config] | None:
    return kernels.CONFIGS.get(name)


def _compile(job: Job) -> tuple[Job, Figures | str]:
    kernel, args, kwargs = next(c for c in CALLS[job.dtype, job.level] if _name(c[0]) == job.kernel)
    fn = _jit(kernel)
    kwargs = dict(kwargs)
    if job.config is not None:
        cfg = _full_configs(job.kernel)[job.config]
        kwargs.update(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    target = GPUTarget("cuda", job.arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, spec, opts = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, spec, opts)
    knobs.nvidia.dump_ptxas_log = True
    log = io.StringIO()
    start = time.time()
    try:  # an empty cache each time, so that ptxas runs and reports
        with tempfile.TemporaryDirectory(prefix="kernel-report-") as cache, contextlib.redirect_stdout(log):
            knobs.cache.dir = cache
            compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target,
                                      options=options.__dict__)
    except Exception as exc:  # reported as a failed row
        return job, f"compile failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    props = _ptxas_properties(log.getvalue())
    if len(props) != 1:
        return job, f"unexpected ptxas log: {log.getvalue()[:300]!r}"
    regs, spill, stack, _ = next(iter(props.values()))
    return job, Figures(regs, spill, stack, compiled.metadata.shared, time.time() - start)


def _ptxas_properties(log: str) -> dict[str, tuple[int, int, int, int]]:
    """function -> (registers, spill bytes (stores + loads), stack frame bytes, static smem)."""
    out: dict[str, list[int]] = {}
    name = None
    for line in log.splitlines():
        if m := re.search(r"Function properties for (\S+)", line):
            name = m.group(1)
            out[name] = [0, 0, 0, 0]
        elif name and (m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                                      line)):
            out[name][1] = int(m.group(2)) + int(m.group(3))
            out[name][2] = int(m.group(1))
        elif name and (m := re.search(r"Used (\d+) registers", line)):
            out[name][0] = int(m.group(1))
            if s := re.search(r"(\d+) bytes smem", line):
                out[name][3] = int(s.group(1))
    return {k: tuple(v) for k, v in out.items()}


def _nvcc(arch: int, source: Path, nvcc: str) -> tuple[int, dict | str]:
    cmd = [nvcc, "-std=c++17", "-O3", "--use_fast_math", "-lineinfo", f"-arch=sm_{arch}", "-Xptxas", "-v",
           "-c", str(source), "-o", os.devnull]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        return arch, f"nvcc failed ({res.returncode}): {res.stderr[-500:]}"
    return arch, _ptxas_properties(res.stdout + res.stderr)


def _demangle(names: list[str]) -> dict[str, str]:
    if not names or shutil.which("c++filt") is None:
        return {n: n for n in names}
    res = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    # "void ns::(anonymous namespace)::name<T>(args)" -> "name<T>"
    short = [re.sub(r"^.*::", "", s.replace("(anonymous namespace)::", "").split("(")[0].split(" ")[-1])
             for s in res.stdout.splitlines()]
    return dict(zip(names, short)) if len(short) == len(names) else {n: n for n in names}


def _jobs() -> list[Job]:
    jobs = []
    for (dname, level), calls in CALLS.items():
        for kernel, _, _ in calls:
            name = _name(kernel)
            configs = _full_configs(name)
            for arch in ARCHS:
                for i in range(len(configs)) if configs else [None]:
                    jobs.append(Job(name, i, dname, level, arch))
    return jobs


def _config_label(name: str, index: int | None) -> str:
    if index is None:
        return "-"
    cfg = _full_configs(name)[index]
    blocks = "x".join(str(v) for v in cfg.kwargs.values())
    return f"{index}: {blocks + ' ' if blocks else ''}w{cfg.num_warps} s{cfg.num_stages}"


def _triton_table(results: dict, lines: list[str]) -> list[str]:
    """Rows (kernel, config, dtype), one cell per arch: the worst level. Returns the problems."""
    problems = []
    lines += ["| kernel | config | dtype | " + " | ".join(f"sm_{a} regs / spill B / smem KB" for a in ARCHS)
              + " | autotuner may pick |",
              "|---|---|---|" + "---:|" * len(ARCHS) + "---|"]
    keys = sorted({(j.kernel, j.config, j.dtype) for j in results},
                  key=lambda k: (list(CALL_ORDER).index(k[0]), -1 if k[1] is None else k[1], list(DTYPES).index(k[2])))
    for name, cfg, dname in keys:
        cells, picks = [], []
        for arch in ARCHS:
            rows = {j.level: f for j, f in results.items() if (j.kernel, j.config, j.dtype, j.arch) == (name, cfg, dname, arch)}
            failed = [f for f in rows.values() if isinstance(f, str)]
            may = cfg is None or kernels.may_pick(name, cfg, DTYPES[dname], arch)
            picks.append(f"sm_{arch}" if may else "")
            if failed:
                cells.append(failed[0])
                if may:
                    problems.append(f"{name} config {_config_label(name, cfg)} {dname} sm_{arch}: {failed[0]}")
                continue
            regs = max(f.regs for f in rows.values())
            spill = max(f.spill for f in rows.values())
            shared = max(f.shared for f in rows.values())
            bad = []
            if spill:
                bad.append("spills")
            if shared > MAX_SHARED[arch]:
                bad.append("shared memory")
            mark = " **!**" if bad else ""
            cells.append(f"{regs} / {spill} / {shared / 1024:.1f}{mark}")
            if bad and may:
                worst = [lv for lv, f in rows.items() if f.spill or f.shared > MAX_SHARED[arch]]
                problems.append(f"{name} config {_config_label(name, cfg)} {dname} sm_{arch}: {' and '.join(bad)}"
                                f" (levels {', '.join(sorted(worst))})")
        pick = ", ".join(p for p in picks if p) or "no (pruned)"
        lines.append(f"| {name} | {_config_label(name, cfg)} | {dname} | " + " | ".join(cells) + f" | {pick} |")
    return problems


def _cuda_table(results: dict[int, dict | str], lines: list[str]) -> None:
    lines += ["", "| CUDA kernel | " + " | ".join(f"sm_{a} regs / spill B / static smem B" for a in ARCHS) + " |",
              "|---|" + "---:|" * len(ARCHS)]
    errors = {a: r for a, r in results.items() if isinstance(r, str)}
    props = {a: r for a, r in results.items() if not isinstance(r, str)}
    names = sorted({n for r in props.values() for n in r})
    short = _demangle(names)
    for n in names:
        cells = []
        for arch in ARCHS:
            p = props.get(arch, {}).get(n)
            cells.append(errors.get(arch, "-") if p is None else
                         f"{p[0]} / {p[1]} / {p[3]}" + (" **!**" if p[1] else ""))
        lines.append(f"| {short[n]} | " + " | ".join(cells) + " |")


CALL_ORDER: dict[str, None] = {}

# Work estimate: POSTER's batch, and the 64x64 tiles of the fwd / dq / dkdv config the estimate assumes.
EST_BATCH, EST_TILE = 144, 64


def work_estimate(lines: list[str]) -> None:
    """Per kernel and level at batch 144: programs, the longest chain of tile iterations one
    program runs, scores computed (padded tiles, relative to the forward's), dots and exps per
    score, and operand elements loaded per score (q, k, v, dO tiles: L2 traffic)."""
    cdiv = triton.cdiv
    lines += ["", f"Work estimate at batch {EST_BATCH} (fwd, dq, dkdv with {EST_TILE}x{EST_TILE} tiles; "
              "scores relative to the forward's; loads = q/k/v/dO elements loaded per score):", "",
              "| level | kernel | programs | longest chain (tile iterations) | scores | dots/score | exp/score "
              "| loads/score | partial buffer |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for level, (_, h, (wh, ww), d) in LEVELS.items():
        n, b = wh * ww, EST_BATCH
        tiles = cdiv(n, EST_TILE)
        fwd = tiles * tiles * EST_TILE ** 2 * b * h
        rows = {  # kernel: (programs, chain, scores, dots, loads per tile iteration)
            "_fwd_kernel": (tiles * b * h, tiles, fwd, 2, 2 * EST_TILE * d),
            "_dq_kernel": (tiles * b * h, tiles, fwd, 3, 2 * EST_TILE * d),
            "_dkdv_kernel": (tiles * b * h, tiles, fwd, 4, 2 * EST_TILE * d),
        }
        bt, _, nt = launch.table_tiling(wh, ww)
        iters, slots = launch.table_slots(b, nt, h)
        rows["_dtable_kernel"] = (slots * h, iters, b * nt * nt * bt * bt * h, 2, 4 * bt * d)
        for name, (programs, chain, scores, dots, loads) in rows.items():
            tile = bt * bt if name == "_dtable_kernel" else EST_TILE ** 2
            part = f"{slots * h * bt * bt * 4 / 2 ** 20:.1f} MB" if name == "_dtable_kernel" else "-"
            lines.append(f"| {level} | {name} | {programs} | {chain} | {scores / fwd:.2f} | {dots} | 1 | "
                         f"{loads / tile:.2f} | {part} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compiles")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA kernels")
    parser.add_argument("--nvcc", default=os.environ.get("NVCC", "nvcc"), help="nvcc to use (default: $NVCC or nvcc)")
    args = parser.parse_args()
    start = time.time()
    CALLS.update(_record())
    for calls in CALLS.values():
        for kernel, _, _ in calls:
            CALL_ORDER.setdefault(_name(kernel))
    jobs = _jobs()
    sources = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
    nvcc = shutil.which(args.nvcc) if not args.no_cuda else None
    with multiprocessing.get_context("fork").Pool(max(1, args.jobs)) as pool:
        cuda_async = [pool.apply_async(_nvcc, (a, s, nvcc)) for a in ARCHS for s in sources] if nvcc else []
        results = dict(pool.imap_unordered(_compile, jobs))
        cuda_parts = [r.get() for r in cuda_async]
    cuda: dict[int, dict | str] = {}
    for arch, res in cuda_parts:
        if isinstance(res, str) or isinstance(cuda.get(arch), str):
            cuda[arch] = res if isinstance(res, str) else cuda[arch]
        else:
            cuda.setdefault(arch, {}).update(res)

    lines = [f"Triton {triton.__version__}, ptxas from the triton wheel; spill B = bytes of spill stores + loads; "
             f"worst of the levels "
             f"{', '.join(f'{k} (N={v[2][0] * v[2][1]}, H={v[1]})' for k, v in LEVELS.items())}, D=32. "
             f"Shared memory limit per block: " + ", ".join(f"sm_{a} {MAX_SHARED[a] // 1024} KB" for a in ARCHS) + ".",
             ""]
    problems = _triton_table(results, lines)
    if nvcc:
        lines += ["", f"CUDA: `{Path(nvcc).name} -O3 --use_fast_math -Xptxas -v` on "
                  f"{', '.join(s.name for s in sources)} (dynamic shared memory is sized by the launcher)."]
        _cuda_table(cuda, lines)
    else:
        lines += ["", "CUDA kernels skipped (" + ("--no-cuda" if args.no_cuda else f"{args.nvcc} not found") + ")."]
    work_estimate(lines)
    compile_s = sum(f.seconds for f in results.values() if isinstance(f, Figures))
    lines += ["", f"{len(jobs)} Triton compiles ({compile_s:.0f} s of compile time) on {args.jobs} processes; "
              f"wall {time.time() - start:.0f} s."]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if problems:
        print("\nFAIL: configs the autotuner may pick that spill or overflow shared memory:", file=sys.stderr)
        for p in problems:
            print("  " + p, file=sys.stderr)
        return 1
    print("\nOK: no config the autotuner may pick spills or overflows shared memory.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
