"""`poster-fast bench` with one backend made to crash its process: gpu_check.sh --dry-run --fault.

The first time BACKEND runs (an op row, or the model's attention) the process prints one line
and aborts (SIGABRT), as a kernel that takes the process down would, so the rehearsal shows that
the check contains the crash to that bench process and reports it.

    python benchmarks/gpu_check_fault.py BACKEND [bench options...]
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Callable

from poster_fast.benchmarking import op
from poster_fast.commands.bench import main
from poster_fast.ops import backend as registry


def _crash(name: str) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        print(f"gpu_check_fault: backend {name!r} aborts its process (injected fault)", flush=True)
        os.abort()
    return run


def plant(name: str) -> None:
    """Make backend `name` (registered, or a bench baseline) abort the process when it runs."""
    real = op.op_function
    op.op_function = lambda backend, case: _crash(backend) if backend == name else real(backend, case)
    if name in registry.registered():
        registry._REGISTRY[name] = dataclasses.replace(registry.get(name), run=_crash(name))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__.splitlines()[-1].strip())
    plant(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
