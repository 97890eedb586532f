"""`poster-fast bench`: how much faster, at the same answer.

Budget, W-MCSA op and model tables, measured in one process so every ratio compares numbers
from the same run (docs/benchmarks.md; the library is poster_fast.benchmarking). Only the
standard library is imported here: torch and the kernels load when the command runs.
`python -m poster_fast.commands.bench` runs this command alone (benchmarks/gpu_check.sh).
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ..benchmarking.config import BASELINES, CLOCKS, DTYPE_NAMES, LEVELS, SECTIONS, Config
from ..errors import UsageError
from ..files import check_output_file

HELP = "time the W-MCSA backends and the model against the reference and the machine's roofline"
DESCRIPTION = ("Budget, W-MCSA op, model, roofline and profile tables (GPU if present, else CPU; random "
               "weights). The JSON is rewritten after every row.")
INTERRUPTED = 130  # exit status when SIGINT cut the run (its tables and JSON are still written)


def _csv(kind: Callable[[str], Any], choices: tuple | None = None) -> Callable[[str], list]:
    def parse(text: str) -> list:
        items = [kind(s.strip()) for s in text.split(",") if s.strip()]
        bad = [i for i in items if choices is not None and i not in choices]
        if not items or bad:
            among = f" from {', '.join(map(str, choices))}" if choices is not None else ""
            raise argparse.ArgumentTypeError(f"expected a comma-separated list{among}, got {text!r}")
        return list(dict.fromkeys(items))
    return parse


def _at_least(kind: Callable[[str], float], low: float, what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < low:
            raise argparse.ArgumentTypeError(f"expected {what} >= {low:g}, got {text!r}")
        return value
    return parse


_positive, _nonnegative = _at_least(int, 1, "an integer"), _at_least(int, 0, "an integer")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (DESCRIPTION + "\nDefaults: on CUDA batch 144, fp32,bf16, 5/20 op and 3/10 model "
                          "warm-up/timed calls; on CPU batch 8 (model 2), fp32, 1/5 and 1/3; --quick: op "
                          "batch 16 / 2 (CUDA / CPU), model batch 16 / 1, 2/5 and 1/3 (CUDA), 1/2 and 1/1 (CPU).")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few repeats (under a minute on a 2-core CPU)")
    parser.add_argument("--batch", type=_positive, help="op batch, and model batch unless --model-batch "
                        "(default 144 on CUDA, 8 on CPU; --quick: 16 / 2)")
    parser.add_argument("--model-batch", type=_positive,
                        help="model batch (default: --batch, or 2 on CPU, 1 with --quick)")
    parser.add_argument("--dtypes", type=_csv(str, DTYPE_NAMES),
                        help="op dtypes and model precisions, e.g. fp32,bf16 (default fp32,bf16 on CUDA, fp32 on "
                             "CPU); the plain fp32 model is always timed as the model rows' baseline; the roofline "
                             "and profile sections take those the device computes natively (default: fp32, and "
                             "bf16 where native)")
    parser.add_argument("--levels", type=_csv(int, tuple(LEVELS)), help="POSTER levels 1,2,3 (default all)")
    parser.add_argument("--backends", type=_csv(str),
                        help="op backends to time (default: all that run well here): the registered ones "
                             f"(cuda, triton, cpu, ...) and the baselines {', '.join(BASELINES)}")
    parser.add_argument("--model-backend", metavar="NAME",
                        help="the W-MCSA backend of the model rows (default: the fused backend with the least op "
                             "fwd+bwd time in this run, else the one backend='auto' picks)")
    parser.add_argument("--sections", type=_csv(str, SECTIONS),
                        help=f"parts to run (default all): {','.join(SECTIONS)}")
    parser.add_argument("--warmup", type=_nonnegative, help="warm-up calls before timing")
    parser.add_argument("--iters", type=_positive, help="timed calls (the median is reported)")
    parser.add_argument("--threads", type=_positive,
                        help="CPU threads for torch (default: torch's; 1 with --quick on CPU)")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda if available")
    parser.add_argument("--time-limit", type=_at_least(float, 1, "seconds"), metavar="SECONDS",
                        help="start no row after this many seconds; the rows left are recorded as cut")
    parser.add_argument("--clock", choices=CLOCKS,
                        help="how the roofline and profile sections time: the wall clock (default) or this "
                             "process's CPU time (steadier on a shared machine with --threads 1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON (after every row)")


def run(args: argparse.Namespace) -> int:
    """Resolve the options, run the bench; 0 when it ran to its end, 2 for a bad option,
    130 when interrupted."""
    if args.json is not None:
        check_output_file("--json", args.json)
    cfg = resolve(args)
    if isinstance(cfg, str):
        raise UsageError(cfg)
    from ..benchmarking.runner import run as run_bench

    with _interruptible():
        result = run_bench(cfg, command_line(args), args.json)
    return INTERRUPTED if result["cut"] == "interrupted (SIGINT)" else 0


@contextmanager
def _interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt while the bench runs, so a timeout stops it
    cleanly (tables printed, JSON written) even where the parent ignored SIGINT, as shells do for
    background jobs. Only the main thread can set handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def resolve(args: argparse.Namespace) -> Config | str:
    """The run's Config (defaults by device and --quick; explicit options win), or what is wrong."""
    import torch

    from ..benchmarking.op import known_backends
    from ..benchmarking.roofline import roofline_dtypes

    known = known_backends()
    unknown = [b for b in args.backends or [] if b not in known]
    if unknown:
        return f"--backends: unknown backend {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
    from .. import ops

    if args.model_backend is not None and args.model_backend not in ops.registered():
        return (f"--model-backend: unknown backend {args.model_backend!r}; known: "
                f"{', '.join(ops.registered())}")
    if args.device == "cuda" and not torch.cuda.is_available():
        return "--device cuda: no CUDA GPU is visible to torch"
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
        backends=[b for b in known if b in (args.backends or known)], requested=set(args.backends or ()),
        warmup=pick(args.warmup, 5, 1, 2, 1), iters=pick(args.iters, 20, 5, 5, 2),
        model_warmup=pick(args.warmup, 3, 1, 1, 1), model_iters=pick(args.iters, 10, 3, 3, 1),
        sections=args.sections or list(SECTIONS), quick=quick, model_backend=args.model_backend,
        # A shared 2-core box: one thread avoids OpenMP oversubscription (5x faster when busy).
        threads=args.threads or (1 if quick and not cuda else torch.get_num_threads()),
        time_limit=args.time_limit, roofline_dtypes=roofline_dtypes(device, args.dtypes),
        clock=args.clock or "wall")


def command_line(args: argparse.Namespace) -> str:
    """The command, rebuilt from the parsed options (what RESULTS.md records)."""
    parts = ["poster-fast bench"] + (["--quick"] if args.quick else [])
    for name in ("batch", "model_batch", "dtypes", "levels", "backends", "model_backend", "sections", "warmup",
                 "iters", "threads", "device", "time_limit", "clock", "json"):
        value = getattr(args, name)
        if value is not None:
            if isinstance(value, list):
                text = ",".join(map(str, value))
            else:
                text = format(value, "g") if isinstance(value, float) else str(value)
            parts.append(f"--{name.replace('_', '-')} {text}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    from .cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
