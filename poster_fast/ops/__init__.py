"""W-MCSA, the window multi-head cross-attention of POSTER V2, behind one function.

`window_cross_attention(q, k, v, rpb_table, window_size)` computes, for every window w of
image b, softmax(scale * q[b] k[b*nW+w]^T + bias) v[b*nW+w], with the Swin relative position
bias gathered from `rpb_table`. The backends (ops/backends/, one module each) declare what they
support as data (ops/backend.py); `backend="auto"` takes the first one, in priority order, that
can run the problem, `explain` says which and why each other one was skipped, and
`reasons(name, problem)` why a given one cannot run.

Layout: validate.py (argument checks, `WindowProblem`), reference.py (the pure-PyTorch
specification), backend.py (the contract, registry and selection), backends/ (the
declarations), autograd.py (fake kernels and autograd of the compiled ops), extension.py
(poster_fast._C), triton/ (the Triton kernels and their torch ops, loaded on first use).
"""
from __future__ import annotations

import torch

from . import backends, reference  # noqa: F401  (importing backends registers them)
from .backend import Backend, register, registered, select
from .backend import explain as _explain
from .backend import reasons as _reasons
from .validate import WindowProblem, check_inputs


def reasons(name: str, problem: WindowProblem, auto: bool = False) -> list[str]:
    """Why backend `name` cannot run `problem` (empty when it can); with `auto`, also why
    `backend="auto"` would never pick it on this device type (e.g. Triton's CPU interpreter)."""
    return _reasons(name, problem, auto)


def window_cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rpb_table: torch.Tensor,
    window_size: int | tuple[int, int],
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """W-MCSA forward (differentiable in q, k, v and rpb_table, to any order).

    q: (B, H, N, D) one query set per image; k, v: (B*nW, H, N, D) window-major per image;
    rpb_table: ((2Wh-1)*(2Ww-1), H); window_size: int or (Wh, Ww) with N = Wh*Ww;
    scale defaults to D**-0.5. Returns (B*nW, H, N, D) in q's dtype.
    """
    problem = check_inputs(q, k, v, rpb_table, window_size, scale)
    return select(backend, problem).run(q, k, v, rpb_table, problem)


def explain(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rpb_table: torch.Tensor,
    window_size: int | tuple[int, int],
    scale: float | None = None,
) -> dict[str, object]:
    """{"chosen": the backend `auto` picks, "skipped": {every other backend: its reasons}}."""
    report = _explain(check_inputs(q, k, v, rpb_table, window_size, scale))
    chosen = next(name for name, why in report.items() if not why)
    return {"chosen": chosen, "skipped": {name: why or [f"{chosen!r} comes first in auto's order"]
                                          for name, why in report.items() if name != chosen}}


__all__ = ["window_cross_attention", "explain", "reasons", "registered", "check_inputs",
           "WindowProblem", "Backend", "register", "reference"]
