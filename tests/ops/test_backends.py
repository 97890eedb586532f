"""One suite for every registered W-MCSA backend (`ops.registered()`).

Each backend runs on CUDA when there is a GPU and it runs there, else on the CPU; one that
cannot run a test's problem is skipped with its reasons. A backend that `auto` would not pick
on the test device (Triton under its CPU interpreter) runs an emulation of its GPU path, which
is slow: such paths run the small cases only. Accuracy follows the fp64-anchored policy of
wmca_utils; the reference backend is the specification itself (tests/test_ops.py checks it
against the loop definition), so the accuracy tests skip it.
"""
from __future__ import annotations

import pytest
import torch

from poster_fast import ops
from poster_fast.ops import backend
from wmca_utils import (Case, assert_within_reference_error, check_backend, forward_and_grads,
                        level_cases, make_inputs, reference_results)

pytestmark = [
    pytest.mark.cuda,  # runs on the GPU when there is one
    # raised inside triton's interpreter when a loop bound is a tensor
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning"),
]
F32, F16, BF16, F64 = torch.float32, torch.float16, torch.bfloat16, torch.float64
BACKENDS = ops.registered()
FUSED = tuple(n for n in BACKENDS if n != "reference")


def device_for(name: str) -> str:
    devices = backend.get(name).devices
    return "cuda" if torch.cuda.is_available() and (devices is None or "cuda" in devices) else "cpu"


def emulated(name: str, device: str) -> bool:
    """Whether `name` runs on `device` only as a test path that `auto` never picks."""
    picked_on = backend.get(name).picked_on
    return picked_on is not None and device not in picked_on


def require(name: str, case: Case, dtype: torch.dtype, device: str) -> None:
    """Skip, with the backend's reasons, when it cannot run this problem."""
    problem = ops.WindowProblem(case.batch, case.windows, case.heads, case.tokens, case.head_dim,
                                case.window, case.head_dim ** -0.5, dtype, torch.device(device))
    why = ops.reasons(name, problem)
    if why:
        pytest.skip(f"{name}: {'; '.join(why)}")


LEVEL = level_cases(lambda i: 1, name="level{}")  # POSTER's three levels, one image
# name: (case, dtypes, dtypes on an emulated path)
CASES = {
    "level1": (LEVEL["level1"], (F32, BF16), ()),
    "level2": (LEVEL["level2"], (F32, F16), ()),
    "level3": (LEVEL["level3"], (F32, F16, BF16), (F32,)),
    "windows": (Case(2, 3, 2, (4, 4), 32), (F32, BF16), (F32, BF16)),
    "nonsquare": (Case(1, 2, 3, (3, 5), 20), (F32, F16, BF16), (F32, F16, BF16)),
    "wide": (Case(1, 2, 1, (2, 20), 16), (F32,), (F32,)),  # Ww > 16
    "d64": (Case(1, 2, 2, (4, 3), 64), (F32, BF16), (F32, BF16)),
    "d128": (Case(1, 1, 1, (3, 4), 128), (F32, F16), (F32,)),
    "n45": (Case(1, 1, 2, (5, 9), 32), (F32,), (F32,)),  # partial blocks
}
GPU_CASES = {"level1_batch16": (level_cases(lambda i: 16)["L1"], (F32, BF16))}
SMALL = Case(2, 2, 2, (3, 5), 16)


def _accuracy_params():
    for case_id, (_, dtypes, _) in CASES.items():
        for dtype in dtypes:
            for name in FUSED:
                yield pytest.param(name, case_id, dtype, id=f"{name}-{case_id}-{str(dtype)[6:]}")


@pytest.mark.parametrize("name,case_id,dtype", list(_accuracy_params()))
def test_forward_and_gradients(name: str, case_id: str, dtype: torch.dtype) -> None:
    case, _, emulated_dtypes = CASES[case_id]
    device = device_for(name)
    require(name, case, dtype, device)
    if emulated(name, device) and dtype not in emulated_dtypes:
        pytest.skip(f"{name} on {device} is an emulation: small cases only")
    check_backend(name, case, dtype, device)


@pytest.mark.parametrize("dtype", [F32, BF16], ids=str)
@pytest.mark.parametrize("name", FUSED)
def test_gpu_training_batch(name: str, dtype: torch.dtype) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    case = GPU_CASES["level1_batch16"][0]
    require(name, case, dtype, device_for(name))
    check_backend(name, case, dtype, device_for(name), noncontiguous=True)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
@pytest.mark.parametrize("name", FUSED)
def test_float32_table_with_half_inputs(name: str, dtype: torch.dtype) -> None:
    device = device_for(name)
    require(name, SMALL, dtype, device)
    check_backend(name, SMALL, dtype, device, table_dtype=F32)


@pytest.mark.parametrize("dtype", [F32, F16], ids=str)
@pytest.mark.parametrize("name", FUSED)
def test_noncontiguous_inputs(name: str, dtype: torch.dtype) -> None:
    device = device_for(name)
    require(name, CASES["windows"][0], dtype, device)
    check_backend(name, CASES["windows"][0], dtype, device, noncontiguous=True)


@pytest.mark.parametrize("name", FUSED)
def test_custom_scale_and_gradients_of_some_inputs(name: str) -> None:
    device = device_for(name)
    require(name, SMALL, F32, device)
    q, k, v, table = make_inputs(SMALL, F32, device)
    q.requires_grad_(False)
    v.requires_grad_(False)
    grad_out = torch.randn(SMALL.out_shape, device=device)
    out = ops.window_cross_attention(q, k, v, table, SMALL.window, scale=0.7, backend=name)
    got = [out.detach(), *torch.autograd.grad(out, (k, table), grad_out)]
    leaves = [t.detach().requires_grad_() for t in (q, k, v, table)]
    exact, same = reference_results(leaves, SMALL.window, grad_out, scale=0.7)
    assert_within_reference_error(got, [exact[i] for i in (0, 2, 4)], [same[i] for i in (0, 2, 4)],
                                  names=("out", "dk", "d_table"))


@pytest.mark.parametrize("name", BACKENDS)
def test_bitwise_deterministic(name: str) -> None:
    if not backend.get(name).deterministic:
        pytest.skip(f"{name} is not declared deterministic")
    device = device_for(name)
    require(name, SMALL, F32, device)
    inputs = make_inputs(SMALL, F32, device)
    grad_out = torch.randn(SMALL.out_shape, device=device)
    first = forward_and_grads(inputs, SMALL.window, name, grad_out)
    torch.full((1 << 20,), float("nan"), device=device)  # dirty the allocator between runs
    second = forward_and_grads(inputs, SMALL.window, name, grad_out)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("name", BACKENDS)
def test_opcheck(name: str) -> None:
    declared = backend.get(name).torch_ops
    if declared is None:
        pytest.skip(f"{name} runs no custom torch op")
    device = device_for(name)
    case = Case(2, 2, 2, (2, 3), 16)
    require(name, case, F32, device)
    q, k, v, table = make_inputs(case, F32, device)
    ops.window_cross_attention(q, k, v, table, case.window, backend=name)  # registers the ops
    fwd, bwd = (getattr(torch.ops.poster_fast, op.split("::")[1]).default for op in declared)
    torch.library.opcheck(fwd, (q, k, v, table, 2, 3, 0.25))
    out, lse = fwd(*(t.detach() for t in (q, k, v, table)), 2, 3, 0.25)
    args = [t.detach() for t in (torch.randn_like(out), q, k, v, table, out, lse)]
    torch.library.opcheck(bwd, (*args, 2, 3, 0.25))


@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
@pytest.mark.parametrize("name", BACKENDS)
def test_torch_compile_fullgraph(name: str, compiler: str) -> None:
    """fullgraph (no graph break, the selection included), then a second batch size, which
    retraces with dynamic shapes."""
    device = device_for(name)
    if compiler == "inductor" and device != "cuda":
        pytest.skip("Inductor only on CUDA (on the CPU the compiled ops are opaque to it)")
    case = Case(1, 2, 2, (3, 3), 16)
    require(name, case, F32, device)

    def loss(q, k, v, table):
        return ops.window_cross_attention(q, k, v, table, case.window, backend=name).square().sum()

    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True, backend=compiler)
    for batch in (1, 2):
        inputs = make_inputs(Case(batch, 2, 2, (3, 3), 16), F32, device)
        got = torch.autograd.grad(compiled(*inputs), inputs)
        want = torch.autograd.grad(loss(*inputs), inputs)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)


@pytest.mark.parametrize("name", BACKENDS)
def test_explain_and_explicit_use(name: str) -> None:
    device = device_for(name)
    q, k, v, table = (t.detach() for t in make_inputs(SMALL, F32, device))
    report = ops.explain(q, k, v, table, SMALL.window)
    assert {report["chosen"], *report["skipped"]} == set(BACKENDS)
    assert all(report["skipped"].values()), report
    why = ops.reasons(name, ops.check_inputs(q, k, v, table, SMALL.window))
    if why:
        with pytest.raises(RuntimeError, match=f"backend='{name}' cannot run"):
            ops.window_cross_attention(q, k, v, table, SMALL.window, backend=name)
    else:
        ops.window_cross_attention(q, k, v, table, SMALL.window, backend=name)
        if not emulated(name, device):  # auto takes it or one earlier in ops.BACKENDS
            order = ops.registered()
            assert order.index(report["chosen"]) <= order.index(name)


def _second_order(name: str, inputs, window) -> list[torch.Tensor]:
    """Gradient, wrt the inputs that require it, of sum_i <g_i, w_i> where g = d(sum out^2)/d(them)
    (with fixed random weights w_i): a second-order gradient of every kind."""
    wrt = [t for t in inputs if t.requires_grad]
    out = ops.window_cross_attention(*inputs, window, backend=name)
    grads = torch.autograd.grad(out.pow(2).sum(), wrt, create_graph=True)
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(g.shape, generator=gen, dtype=torch.float64).to(g) for g in grads]
    return list(torch.autograd.grad(sum((g * w).sum() for g, w in zip(grads, weights)), wrt))


@pytest.mark.parametrize("which", ["q_table", "all"])
@pytest.mark.parametrize("name", FUSED)
def test_double_backward_matches_reference(name: str, which: str) -> None:
    """q (1,2,49,32), k = v (2,2,49,32), gradients wrt q and the table: where a compiled
    backward once gave a silent zero; then all four inputs."""
    device = device_for(name)
    case = Case(1, 2, 2, (7, 7), 32)
    require(name, case, F32, device)
    q, k, v, table = make_inputs(case, F32, device)
    if which == "q_table":
        k.requires_grad_(False)
        v = k
    inputs = (q, k, v, table)
    got = _second_order(name, inputs, case.window)
    exact = _second_order("reference", [t.detach().double().requires_grad_(t.requires_grad)
                                        for t in inputs], case.window)
    same = _second_order("reference", inputs, case.window)
    assert exact[-1].abs().max() > 1  # the second-order table gradient is far from zero
    names = [n for n, t in zip(("d2q", "d2k", "d2v", "d2_table"), inputs) if t.requires_grad]
    assert_within_reference_error(got, exact, same, names=names)


@pytest.mark.parametrize("name", BACKENDS)
def test_gradgradcheck_float64(name: str) -> None:
    device = device_for(name)
    case = Case(1, 2, 1, (2, 3), 4)
    require(name, case, F64, device)
    inputs = make_inputs(case, F64, device)
    assert torch.autograd.gradgradcheck(
        lambda *a: ops.window_cross_attention(*a, case.window, backend=name), inputs,
        fast_mode=True)
