"""ONNX translation of the compiled W-MCSA ops, for `torch.onnx.export(..., dynamo=True)`.

The C++ op `poster_fast::wmca_fwd` (the "cpu" and "cuda" backends) and the Triton op
`poster_fast::wmca_triton_fwd` share the schema fwd(q, k, v, table, wh, ww, scale) -> (out, lse).
`wmca_fwd` writes the formula of ops/reference.py in ONNX operators (opset 18):
    out[b*nW + w, h] = softmax(scale * q[b, h] @ k[b*nW + w, h]^T + bias[h]) @ v[b*nW + w, h]
    lse[b*nW + w, h] = logsumexp over the keys of the same logits
The window (wh, ww) is fixed in the traced graph, so the Swin relative-position index becomes
a constant of the ONNX graph; B and nW stay dynamic (read from the shapes of q and k).
Needs onnxscript (poster_fast[onnx]).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import onnx_ir as ir
from onnxscript import opset18 as op

from .reference import relative_position_index

OPSET = 18  # the operators used here are those of opset 18
# The ops that `wmca_fwd` translates (schema names).
OPS = ("poster_fast::wmca_fwd", "poster_fast::wmca_triton_fwd")


def wmca_fwd(q: Any, k: Any, v: Any, table: Any, wh: int, ww: int, scale: float) -> tuple[Any, Any]:
    """q (B, H, N, D), k and v (B*nW, H, N, D), table ((2wh-1)(2ww-1), H) -> out like k and
    lse (B*nW, H, N), computed in q's dtype (lse in float32, float64 for float64 inputs, as the
    compiled ops return it)."""
    n = wh * ww
    index = relative_position_index((wh, ww)).reshape(-1).numpy()
    bias = op.Gather(table, op.Constant(value=ir.tensor(index)), axis=0)  # (N*N, H)
    bias = op.Transpose(op.Reshape(bias, op.Constant(value_ints=[n, n, -1])), perm=[2, 0, 1])
    # k and v as (B, nW, H, N, D); q as (B, 1, H, N, D), broadcast over the windows of its image.
    per_image = op.Concat(op.Shape(q, start=0, end=1), op.Constant(value_ints=[-1]), op.Shape(k, start=1),
                          axis=0)
    k5, v5 = op.Reshape(k, per_image), op.Reshape(v, per_image)
    q5 = op.Unsqueeze(op.Mul(q, op.CastLike(op.Constant(value_float=scale), q)), op.Constant(value_ints=[1]))
    logits = op.Add(op.MatMul(q5, op.Transpose(k5, perm=[0, 1, 2, 4, 3])), op.CastLike(bias, q))
    out = op.Reshape(op.MatMul(op.Softmax(logits, axis=-1), v5), op.Shape(k))
    lse_type = ir.DataType.DOUBLE if q.dtype == ir.DataType.DOUBLE else ir.DataType.FLOAT
    lse = op.ReduceLogSumExp(op.Cast(logits, to=lse_type), op.Constant(value_ints=[-1]), keepdims=0)
    return out, op.Reshape(lse, op.Shape(k, start=0, end=3))


def translation_table(targets: Iterable[Any]) -> dict[Any, Callable[..., Any]]:
    """{op overload: translation} for the poster_fast ops among `targets` (the call targets of
    an exported graph); raises ValueError naming a poster_fast op that has no translation."""
    table = {}
    for target in targets:
        name = getattr(getattr(target, "_schema", None), "name", "")
        if name.startswith("poster_fast::"):
            if name not in OPS:
                raise ValueError(f"{name}: no ONNX translation (poster_fast/ops/onnx.py translates {OPS})")
            table[target] = wmca_fwd
    return table
