"""What is specific to the Triton backend (the shared backend suite is
tests/ops/test_backends.py): its declaration, the launchers' TF32 setting and table-gradient
chunking, extreme logits, and GPU-only shapes (batch 144, grids beyond 65535).

Without a GPU conftest.py sets TRITON_INTERPRET=1 and the kernels run (slowly) on the CPU;
tests marked `cuda` then run on the CPU when they can, or skip. That poster_fast imports and
explains without triton is tested in tests/ops/test_contract.py.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from poster_fast import ops
from poster_fast.ops.backends import triton as triton_backend
from wmca_utils import Case, check_backend, make_inputs

pytestmark = [
    pytest.mark.cuda,  # the whole file runs on the GPU when there is one (DEVICE below)
    pytest.mark.skipif(not triton_backend.FOUND, reason="triton is not installed"),
    # raised inside triton's interpreter when a loop bound is a tensor
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning"),
]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def _problem(**changes) -> ops.WindowProblem:
    base = ops.WindowProblem(1, 1, 1, 4, 16, (2, 2), 0.25, F32, torch.device("cpu"))
    return dataclasses.replace(base, **changes)


def test_declaration_refuses_what_the_kernels_do_not_support(monkeypatch: pytest.MonkeyPatch) -> None:
    reasons = triton_backend.BACKEND.reasons
    assert reasons(_problem(tokens=65, window=(1, 65))) == ["window width 65 > 64 is not supported"]
    assert reasons(_problem(head_dim=160)) == ["head_dim 160 > 128 is not supported"]
    assert reasons(_problem(dtype=torch.float64)) == [
        "dtype float64 is not supported (float32, float16, bfloat16)"]
    assert reasons(_problem(heads=70000)) == [
        "H = 70000 > 65535 (CUDA grid axis 1 of the table-gradient kernels)"]
    monkeypatch.setattr(triton_backend, "interpreted", lambda: False)
    assert reasons(_problem()) == [
        "CPU tensors need TRITON_INTERPRET=1 set before the Triton kernels are first used"]


def test_tf32_setting_from_either_torch_api() -> None:
    """fp32 dots follow cuBLAS's TF32 setting; reading the legacy allow_tf32 raises in torch >= 2.9
    once the new fp32_precision API set "tf32", so the op must not rely on it alone."""
    from poster_fast.ops.triton import launch

    matmul = torch.backends.cuda.matmul
    old = getattr(matmul, "fp32_precision", None)
    if old is None:
        pytest.skip("torch without backends.cuda.matmul.fp32_precision")
    q = torch.zeros(1, 1, 4, 16)
    try:
        for prec in ("tf32", "ieee"):
            matmul.fp32_precision = prec
            assert launch._consts(q, 2, 2)["PREC"] == prec
            assert launch._consts(q.half(), 2, 2)["PREC"] == "tf32"  # ignored for half dots
    finally:
        matmul.fp32_precision = old


@pytest.mark.parametrize("shift", [95.0, -95.0])
def test_large_bias_values(shift: float) -> None:
    """|logits| near exp's fp32 limit: padded rows/columns must not turn into inf * 0.

    At |logits| ~ 95 the rounding of each fp32 logit (ulp 7.6e-6) dominates both the kernel's
    and the eager reference's error, and their ratio varies from draw to draw (up to ~6x seen
    in 24 draws), hence a factor of 10 instead of 3."""
    case = Case(1, 2, 2, (3, 5), 16)
    q, k, v, table = make_inputs(case, F32, DEVICE)
    table = (table.detach() + shift).requires_grad_()
    check_backend("triton", case, F32, DEVICE, inputs=[q, k, v, table], factor=10.0)


@gpu
def test_level_shapes_batch144_gpu_no_sync() -> None:
    """POSTER's three levels at batch 144, with host syncs turned into errors."""
    for window, heads in (((28, 28), 2), ((14, 14), 4), ((7, 7), 8)):
        case = Case(144, 1, heads, window, 32)
        q, k, v, table = make_inputs(case, F16, DEVICE, table_dtype=F32)
        out = ops.window_cross_attention(q, k, v, table, window, backend="triton")  # autotune (syncs)
        torch.autograd.grad(out.float().square().sum(), (q, k, v, table))
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = ops.window_cross_attention(q, k, v, table, window, backend="triton")
            grads = torch.autograd.grad(out.float().square().sum(), (q, k, v, table))
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
        check_backend("triton", case, F16, DEVICE, inputs=[q, k, v, table])


@gpu
def test_grid_beyond_65535_window_heads_gpu() -> None:
    """B*nW*H = 66000 (window, head) pairs: more than CUDA allows on grid axes 1 and 2."""
    check_backend("triton", Case(4, 8250, 2, (2, 2), 16), F16, DEVICE)

