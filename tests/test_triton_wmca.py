"""Triton W-MCSA backend: forward and all gradients against the fp64 reference, determinism of
d_table, torch.library registration (opcheck, torch.compile) and dispatch reasons.

On a GPU-less machine conftest.py sets TRITON_INTERPRET=1, so the kernels run (slowly) on the
CPU: shapes are small. Tests marked `cuda` need a GPU and are skipped otherwise.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from poster_fast.ops import explain, triton_wmca, window_cross_attention
from poster_fast.ops.validate import check_inputs
from wmca_utils import Case, assert_within_reference_error, forward_and_grads, make_inputs, reference_results

pytestmark = [
    pytest.mark.cuda,  # the whole file runs on the GPU when there is one (DEVICE below)
    pytest.mark.skipif(triton_wmca.triton is None, reason="triton is not installed"),
    # raised inside triton's interpreter when a loop bound is a tensor
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning"),
]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if triton_wmca.triton is not None:
    from poster_fast.ops.triton import kernels, launch
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
LEVEL3 = Case(2, 1, 8, (7, 7), 32)  # POSTER's level-3 shape at batch 2


@pytest.fixture(autouse=True)
def _first_config_only_on_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU every new shape would compile and time all autotune configs (19 compiles, fp32
    ones up to ~30 s each at D=128); tests use each kernel's first config, the benchmarks tune."""
    if DEVICE == "cuda":
        for name in ("_fwd_kernel", "_dkdv_kernel", "_dq_kernel", "_dtable_kernel"):
            kernel = getattr(kernels, name)
            monkeypatch.setattr(kernel, "configs", kernel.configs[:1])


def check_against_reference(case: Case, dtype: torch.dtype, scale: float | None = None,
                            table_dtype: torch.dtype | None = None, noncontiguous: bool = False,
                            factor: float = 3.0) -> None:
    inputs = make_inputs(case, dtype, DEVICE, table_dtype=table_dtype, noncontiguous=noncontiguous)
    grad_out = torch.randn(case.batch * case.windows, case.heads, case.tokens, case.head_dim,
                           device=DEVICE, dtype=dtype)
    if noncontiguous:  # a strided dO too
        grad_out = grad_out.transpose(-1, -2).contiguous().transpose(-1, -2)
    got = forward_and_grads(inputs, case.window, "triton", grad_out, scale)
    for g, want in zip(got, [inputs[0]] + inputs):
        assert g.dtype == want.dtype and g.device == want.device
    exact, same = reference_results(inputs, case.window, grad_out, scale)
    assert_within_reference_error(got, exact, same, factor)


CASES = {
    "level3": (LEVEL3, [F32, F16]),
    "windows4": (Case(1, 4, 2, (7, 7), 16), [F32, F16]),  # a 14x14 map as 2x2 windows of 7x7
    "nonsquare": (Case(2, 2, 2, (3, 5), 16), [F32, F16, BF16]),
    "wide": (Case(1, 2, 1, (2, 20), 16), [F32, F16]),  # Ww > 16: one image row per table tile
    "d24": (Case(1, 1, 2, (3, 3), 24), [F32]),  # head_dim not a power of two
    "d64": (Case(1, 2, 2, (4, 3), 64), [F32, BF16]),
    "d128": (Case(1, 1, 1, (3, 4), 128), [F32, F16]),
    "n45": (Case(1, 1, 2, (5, 9), 32), [F32]),  # N = 45: partial query/key blocks
}


@pytest.mark.parametrize("name,dtype", [(n, dt) for n, (_, dts) in CASES.items() for dt in dts],
                         ids=lambda x: str(x).replace("torch.", ""))
def test_matches_reference(name: str, dtype: torch.dtype) -> None:
    check_against_reference(CASES[name][0], dtype)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_fp32_table_with_half_inputs(dtype: torch.dtype) -> None:
    check_against_reference(Case(2, 2, 2, (3, 5), 16), dtype, table_dtype=F32)


@pytest.mark.parametrize("dtype", [F32, F16], ids=str)
def test_noncontiguous_inputs(dtype: torch.dtype) -> None:
    check_against_reference(Case(2, 2, 2, (4, 4), 16), dtype, noncontiguous=True)


def test_custom_scale() -> None:
    check_against_reference(Case(1, 2, 2, (3, 4), 32), F32, scale=0.7)


def test_level2_shape() -> None:
    check_against_reference(Case(1, 1, 2, (14, 14), 32), F32)


@cuda
@pytest.mark.parametrize("dtype", [F32, F16, BF16], ids=str)
def test_level1_shape_gpu(dtype: torch.dtype) -> None:
    check_against_reference(Case(2, 1, 2, (28, 28), 32), dtype)


@cuda
def test_level_shapes_batch144_gpu_no_sync() -> None:
    """POSTER's three levels at batch 144, with host syncs turned into errors."""
    for window, heads in (((28, 28), 2), ((14, 14), 4), ((7, 7), 8)):
        case = Case(144, 1, heads, window, 32)
        q, k, v, table = make_inputs(case, F16, DEVICE, table_dtype=F32)
        out = window_cross_attention(q, k, v, table, window, backend="triton")  # autotune (syncs)
        torch.autograd.grad(out.float().square().sum(), (q, k, v, table))
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = window_cross_attention(q, k, v, table, window, backend="triton")
            grads = torch.autograd.grad(out.float().square().sum(), (q, k, v, table))
        finally:
            torch.cuda.set_sync_debug_mode("default")
        want = window_cross_attention(q, k, v, table, window, backend="reference")
        torch.testing.assert_close(out, want, atol=2e-2, rtol=0)
        assert all(torch.isfinite(g).all() for g in grads)


@cuda
def test_grid_beyond_65535_window_heads_gpu() -> None:
    """B*nW*H = 66000 (window, head) pairs: more than CUDA allows on grid axes 1 and 2."""
    check_against_reference(Case(4, 8250, 2, (2, 2), 16), F16)


def test_tf32_setting_from_either_torch_api() -> None:
    """fp32 dots follow cuBLAS's TF32 setting; reading the legacy allow_tf32 raises in torch >= 2.9
    once the new fp32_precision API set "tf32", so the op must not rely on it alone."""
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


def test_table_gradient_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    # 8 windows in chunks of 3, 3, 2 (10 x 3 table programs)
    monkeypatch.setattr(launch, "TABLE_PROGRAMS", 30)
    case = Case(4, 2, 2, (3, 5), 16)
    inputs = make_inputs(case, F32, DEVICE)
    grad_out = torch.randn(8, 2, 15, 16, device=DEVICE)
    first = forward_and_grads(inputs, case.window, "triton", grad_out)
    torch.full((1 << 20,), float("nan"), device=DEVICE)  # dirty the allocator between runs
    second = forward_and_grads(inputs, case.window, "triton", grad_out)
    assert torch.equal(first[-1], second[-1])
    exact, same = reference_results(inputs, case.window, grad_out)
    assert_within_reference_error(first, exact, same)


@pytest.mark.parametrize("shift", [95.0, -95.0])
def test_large_bias_values(shift: float) -> None:
    """|logits| near exp's fp32 limit: padded rows/columns must not turn into inf * 0."""
    case = Case(1, 2, 2, (3, 5), 16)
    q, k, v, table = make_inputs(case, F32, DEVICE)
    table = (table.detach() + shift).requires_grad_()
    grad_out = torch.randn(2, 2, 15, 16, device=DEVICE)
    got = forward_and_grads([q, k, v, table], case.window, "triton", grad_out)
    exact, same = reference_results([q, k, v, table], case.window, grad_out)
    assert_within_reference_error(got, exact, same)


def _small_args(dtype: torch.dtype = F32):
    case = Case(2, 2, 2, (2, 3), 16)
    q, k, v, table = (t.detach() for t in make_inputs(case, dtype, DEVICE))
    return q, k, v, table, case


def test_opcheck_forward() -> None:
    q, k, v, table, _ = _small_args()
    for t in (q, k, v, table):
        t.requires_grad_()
    torch.library.opcheck(torch.ops.poster_fast.wmca_triton_fwd.default, (q, k, v, table, 2, 3, 0.25))


def test_opcheck_backward() -> None:
    q, k, v, table, _ = _small_args()
    out, lse = torch.ops.poster_fast.wmca_triton_fwd(q, k, v, table, 2, 3, 0.25)
    dout = torch.randn_like(out)
    torch.library.opcheck(torch.ops.poster_fast.wmca_triton_bwd.default,
                          (dout, q, k, v, table, out, lse, 2, 3, 0.25))


def test_fake_shapes_and_dtypes() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    q, k, v, table, _ = _small_args(F16)
    table = table.float()
    with FakeTensorMode() as mode:
        fq, fk, fv, ft = (mode.from_tensor(t) for t in (q, k, v, table))
        out, lse = torch.ops.poster_fast.wmca_triton_fwd(fq, fk, fv, ft, 2, 3, 0.25)
        grads = torch.ops.poster_fast.wmca_triton_bwd(out, fq, fk, fv, ft, out, lse, 2, 3, 0.25)
    assert (out.shape, out.dtype, lse.shape, lse.dtype) == (k.shape, F16, k.shape[:3], F32)
    assert [(g.shape, g.dtype) for g in grads] == [(t.shape, t.dtype) for t in (q, k, v, table)]


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend: str) -> None:
    """Under the interpreter the ops are opaque custom ops to Inductor; on GPU (triton_op)
    Inductor sees the Triton kernels themselves."""
    case = Case(1, 2, 2, (3, 3), 16)

    def f(q, k, v, table):
        return window_cross_attention(q, k, v, table, case.window, backend="triton") * 2

    inputs = make_inputs(case, F32, DEVICE)
    explanation = torch._dynamo.explain(f)(*inputs)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend=backend)
    out = compiled(*inputs)
    grads = torch.autograd.grad(out.sum(), inputs)
    want = f(*inputs)
    want_grads = torch.autograd.grad(want.sum(), inputs)
    torch.testing.assert_close(out, want)
    for g, w in zip(grads, want_grads):
        torch.testing.assert_close(g, w)


def test_explain_and_explicit_use_on_cpu() -> None:
    if DEVICE != "cpu":
        pytest.skip("CPU dispatch behaviour")
    q, k, v, table, case = _small_args()
    info = explain(q, k, v, table, case.window)
    assert info["chosen"] != "triton"
    assert any("not picked automatically on cpu" in why for why in info["skipped"]["triton"])
    out = window_cross_attention(q, k, v, table, case.window, backend="triton")
    torch.testing.assert_close(out, window_cross_attention(q, k, v, table, case.window, backend="reference"))


@pytest.mark.parametrize("dtype,head_dim,reason", [(torch.float64, 16, "float64"),
                                                   (F32, 160, "head_dim 160")])
def test_unsupported_problem_raises_with_reason(dtype: torch.dtype, head_dim: int, reason: str) -> None:
    case = Case(1, 1, 1, (2, 2), head_dim)
    inputs = make_inputs(case, dtype, DEVICE)
    assert any(reason in why for why in triton_wmca.not_supported_reasons(check_inputs(*inputs, case.window)))
    with pytest.raises(RuntimeError, match=reason):
        window_cross_attention(*inputs, case.window, backend="triton")


def test_wide_window_and_cpu_without_interpreter_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    case = Case(1, 1, 1, (1, 65), 16)
    problem = check_inputs(*make_inputs(case, F32, "cpu"), case.window)
    assert any("window width 65" in why for why in triton_wmca.not_supported_reasons(problem))
    monkeypatch.setattr(triton_wmca, "INTERPRET", False)
    assert any("TRITON_INTERPRET=1" in why for why in triton_wmca.not_supported_reasons(problem))


def test_import_without_triton() -> None:
    """poster_fast imports without triton and the backend says why it cannot run."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from poster_fast.ops import explain\n"
        "q = torch.randn(1, 1, 4, 8); k = torch.randn(1, 1, 4, 8)\n"
        "print(explain(q, k, k, torch.randn(9, 1), 2)['skipped']['triton'])\n"
    )
    env = {key: val for key, val in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "triton is not installed" in result.stdout
