"""W-MCSA, the window multi-head cross-attention of POSTER V2, behind one function.

`window_cross_attention(q, k, v, rpb_table, window_size)` computes, for every window w of
image b, softmax(scale * q[b] k[b*nW+w]^T + bias) v[b*nW+w], with the Swin relative position
bias gathered from `rpb_table`. Backends: "reference" (pure PyTorch), plus the fused ones
that register themselves on import when they are available. `explain` says which one
`backend="auto"` picks and why the others were skipped.
"""
from __future__ import annotations

import torch

from . import dispatch, reference
from .dispatch import Backend, register, registered
from .validate import WindowProblem, check_inputs

register(Backend("reference", reference.run, reference.not_supported_reasons))


def window_cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rpb_table: torch.Tensor,
    window_size: int | tuple[int, int],
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """W-MCSA forward (differentiable in q, k, v and rpb_table).

    q: (B, H, N, D) one query set per image; k, v: (B*nW, H, N, D) window-major per image;
    rpb_table: ((2Wh-1)*(2Ww-1), H); window_size: int or (Wh, Ww) with N = Wh*Ww;
    scale defaults to D**-0.5. Returns (B*nW, H, N, D) in q's dtype.
    """
    problem = check_inputs(q, k, v, rpb_table, window_size, scale)
    return dispatch.select(backend, problem).run(q, k, v, rpb_table, problem)


def explain(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rpb_table: torch.Tensor,
    window_size: int | tuple[int, int],
    scale: float | None = None,
) -> dict[str, object]:
    """Which backend `auto` would pick for these inputs, and why each other one was skipped."""
    problem = check_inputs(q, k, v, rpb_table, window_size, scale)
    skipped = dispatch.explain_problem(problem)
    chosen = next(name for name, why in skipped.items() if not why)
    return {"chosen": chosen, "skipped": {n: w for n, w in skipped.items() if w}}


# Each fused backend registers itself; a missing dependency becomes a reason, not an ImportError.
from . import extension, triton_wmca  # noqa: E402,F401

__all__ = ["window_cross_attention", "explain", "registered", "check_inputs", "WindowProblem",
           "reference", "Backend", "register"]
