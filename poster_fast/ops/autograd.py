"""Fake kernels and autograd for the compiled W-MCSA ops, written once for every backend.

A compiled backend provides two torch ops with the schemas of csrc/wmca.cpp:
    fwd(q, k, v, table, wh, ww, scale) -> (out, lse)
    bwd(dout, q, k, v, table, out, lse, wh, ww, scale) -> (dq, dk, dv, dtable)
`register_fakes` gives them fake (meta) kernels for torch.compile; `register_autograd` makes the
forward differentiable in q, k, v and table through the fused backward. Only the inputs that
need a gradient get one. Under `create_graph=True` (grad mode is on inside the backward) the
gradients are instead computed through the reference formula from the saved inputs, so that
they are themselves differentiable: second-order gradients are those of the reference.
"""
from __future__ import annotations

from typing import Callable

import torch

from . import reference
from .validate import check_inputs

Backward = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def fake_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor,
                 wh: int, ww: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """out like k in q's dtype; lse (B*nW, H, N) in float32 (float64 for float64 inputs)."""
    return (q.new_empty(k.shape), q.new_empty(k.shape[:3], dtype=_lse_dtype(q.dtype)))


def fake_backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  table: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, wh: int, ww: int,
                  scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each gradient has the shape and dtype of its input."""
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            torch.empty_like(k, memory_format=torch.contiguous_format),
            torch.empty_like(v, memory_format=torch.contiguous_format),
            torch.empty_like(table, memory_format=torch.contiguous_format))


def register_fakes(fwd: str, bwd: str) -> None:
    """Fake kernels for the ops named `fwd` and `bwd` ("namespace::name")."""
    torch.library.register_fake(fwd, fake_forward)
    torch.library.register_fake(bwd, fake_backward)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, table, wh, ww, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, table, out, lse)
    ctx.window, ctx.scale = (wh, ww), scale
    ctx.mark_non_differentiable(lse)
    ctx.set_materialize_grads(False)  # no zero-filled gradient of lse (one kernel less per backward)


def differentiable_gradients(dout: torch.Tensor, inputs: tuple[torch.Tensor, ...],
                             window: tuple[int, int], scale: float,
                             needed: tuple[bool, ...]) -> list[torch.Tensor | None]:
    """Gradients of the reference formula wrt the `needed` inputs, with their own graph
    (called in grad mode)."""
    problem = check_inputs(*inputs, window, scale)
    wanted = [t for t, need in zip(inputs, needed) if need]
    out = reference.run(*inputs, problem)
    grads = iter(torch.autograd.grad(out, wanted, dout, create_graph=True))
    return [next(grads) if need else None for need in needed]


def register_autograd(fwd: str, bwd: Backward) -> None:
    """Make the op named `fwd` differentiable, its first-order gradients computed by `bwd`."""

    def backward(ctx, dout: torch.Tensor, _dlse: torch.Tensor):
        q, k, v, table, out, lse = ctx.saved_tensors
        needed = tuple(ctx.needs_input_grad[:4])
        if torch.is_grad_enabled():  # create_graph: these gradients will be differentiated
            grads = differentiable_gradients(dout, (q, k, v, table), ctx.window, ctx.scale, needed)
        else:
            grads = bwd(dout, q, k, v, table, out, lse, *ctx.window, ctx.scale)
        return (*(g if need else None for g, need in zip(grads, needed)), None, None, None)

    torch.library.register_autograd(fwd, backward, setup_context=_setup_context)
