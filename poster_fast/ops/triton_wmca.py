"""The "triton" W-MCSA backend: declaration and torch.library ops over ops/triton/.

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
except ImportError:  # the backend then registers with a reason instead
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
MAX_HEAD_DIM = 128
MAX_WINDOW_WIDTH = 64
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


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
    from .triton import launch

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

    wmca_fwd = _define("poster_fast::wmca_triton_fwd", launch.forward, _fwd_fake)
    wmca_bwd = _define("poster_fast::wmca_triton_bwd", launch.backward, _bwd_fake)

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
