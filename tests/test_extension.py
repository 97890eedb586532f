"""The compiled W-MCSA kernels (poster_fast._C): CPU always, CUDA when a GPU is present.

Every result is checked against the float64 reference with the flash-attention style bound of
wmca_utils (error at most a few times the same-dtype PyTorch reference's error).
"""
from __future__ import annotations

import pytest
import torch

from poster_fast.ops import explain, extension, window_cross_attention
from wmca_utils import (Case, assert_within_reference_error, forward_and_grads, make_inputs,
                        reference_results)

pytestmark = pytest.mark.skipif(extension._C is None, reason="poster_fast._C is not built")
needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and extension.WITH_CUDA), reason="needs a CUDA GPU and a CUDA build")

LEVELS = {
    "level1": Case(1, 1, 2, (28, 28), 32),
    "level2": Case(2, 1, 4, (14, 14), 32),
    "level3": Case(2, 1, 8, (7, 7), 32),
    "windows": Case(2, 3, 2, (4, 4), 32),
    "nonsquare": Case(1, 2, 3, (3, 5), 20),
    "d64": Case(1, 2, 2, (6, 6), 64),
}


def check_backend(case: Case, dtype: torch.dtype, backend: str, device: str = "cpu",
                  table_dtype: torch.dtype | None = None, noncontiguous: bool = False,
                  factor: float = 3.0) -> None:
    inputs = make_inputs(case, dtype, device=device, seed=0, table_dtype=table_dtype,
                         noncontiguous=noncontiguous)
    grad = torch.randn(case.batch * case.windows, case.heads, case.tokens, case.head_dim,
                       generator=torch.Generator().manual_seed(1)).to(device=device, dtype=dtype)
    exact, same = reference_results(inputs, case.window, grad)
    got = forward_and_grads(inputs, case.window, backend, grad)
    assert got[0].dtype == dtype and got[4].dtype == inputs[3].dtype
    assert_within_reference_error(got, exact, same, factor)


@pytest.mark.parametrize("name", sorted(LEVELS))
def test_cpu_float32(name: str) -> None:
    check_backend(LEVELS[name], torch.float32, "cpu")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["level3", "nonsquare"])
def test_cpu_low_precision_with_float32_table(name: str, dtype: torch.dtype) -> None:
    check_backend(LEVELS[name], dtype, "cpu", table_dtype=torch.float32)


def test_cpu_bfloat16_table() -> None:
    check_backend(LEVELS["windows"], torch.bfloat16, "cpu")


@pytest.mark.parametrize("name", ["level3", "windows"])
def test_cpu_noncontiguous(name: str) -> None:
    check_backend(LEVELS[name], torch.float32, "cpu", noncontiguous=True)


def test_cpu_float64_matches_reference_tightly() -> None:
    case = LEVELS["nonsquare"]
    inputs = make_inputs(case, torch.float64, seed=3)
    grad = torch.randn(case.batch * case.windows, case.heads, case.tokens, case.head_dim,
                       dtype=torch.float64)
    got = forward_and_grads(inputs, case.window, "cpu", grad, scale=0.3)
    exact = forward_and_grads(inputs, case.window, "reference", grad, scale=0.3)
    for g, e in zip(got, exact):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_cpu_lse() -> None:
    case = LEVELS["windows"]
    q, k, v, table = (t.detach() for t in make_inputs(case, torch.float32, seed=4))
    out, lse = torch.ops.poster_fast.wmca_fwd(q, k, v, table, 4, 4, 0.25)
    q_win = q.repeat_interleave(case.windows, dim=0)
    from poster_fast.ops.reference import relative_position_bias
    logits = 0.25 * q_win @ k.transpose(-1, -2) + relative_position_bias(table, case.window)
    torch.testing.assert_close(lse, logits.logsumexp(-1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mutate, message", [
    (lambda a: {**a, "table": a["table"][:-1]}, "table: expected"),
    (lambda a: {**a, "wh": 5}, "tokens"),
    (lambda a: {**a, "k": a["k"][:3], "v": a["v"][:3]}, "multiple of B"),
    (lambda a: {**a, "v": a["v"][..., :-1]}, "v: expected the shape of k"),
    (lambda a: {**a, "k": a["k"].double(), "v": a["v"].double()}, "dtype of q"),
    (lambda a: {**a, "q": a["q"].int()}, "floating dtype"),
    (lambda a: {**a, "q": a["q"][0]}, "4 dims"),
])
def test_bad_inputs_raise_clear_errors(mutate, message: str) -> None:
    case = LEVELS["windows"]
    q, k, v, table = (t.detach() for t in make_inputs(case, torch.float32, seed=0))
    args = mutate(dict(q=q, k=k, v=v, table=table, wh=4, ww=4, scale=0.5))
    with pytest.raises(RuntimeError, match=message):
        torch.ops.poster_fast.wmca_fwd(*args.values())


def _table_grad(case: Case, threads: int) -> torch.Tensor:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        inputs = make_inputs(case, torch.float32, seed=5)
        out = window_cross_attention(*inputs, case.window, backend="cpu")
        return torch.autograd.grad(out, inputs[3], torch.ones_like(out))[0]
    finally:
        torch.set_num_threads(previous)


def test_cpu_table_gradient_is_bitwise_deterministic() -> None:
    case = Case(3, 2, 2, (7, 7), 32)
    first = _table_grad(case, 2)
    assert torch.equal(first, _table_grad(case, 2))
    assert torch.equal(first, _table_grad(case, 1))
    assert torch.equal(first, _table_grad(case, 3))


def test_opcheck_forward_and_backward() -> None:
    case = LEVELS["windows"]
    q, k, v, table = make_inputs(case, torch.float32, seed=6)
    torch.library.opcheck(torch.ops.poster_fast.wmca_fwd.default, (q, k, v, table, 4, 4, 0.5))
    out, lse = torch.ops.poster_fast.wmca_fwd(q, k, v, table, 4, 4, 0.5)
    detached = [t.detach() for t in (torch.randn_like(out), q, k, v, table, out, lse)]
    torch.library.opcheck(torch.ops.poster_fast.wmca_bwd.default, (*detached, 4, 4, 0.5))


def test_torch_compile_fullgraph_matches_eager() -> None:
    case = LEVELS["nonsquare"]
    inputs = make_inputs(case, torch.float32, seed=7)

    def loss(q, k, v, table):
        return window_cross_attention(q, k, v, table, case.window, backend="cpu").square().sum()

    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(*inputs), inputs)
    want = torch.autograd.grad(loss(*inputs), inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_explain_picks_cpu_on_cpu() -> None:
    case = LEVELS["level3"]
    inputs = make_inputs(case, torch.float32, seed=0)
    info = explain(*inputs, case.window)
    assert info["chosen"] == "cpu"
    assert any("cuda" in reason for reason in info["skipped"]["cuda"])


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(LEVELS))
def test_cuda_matches_reference(name: str, dtype: torch.dtype) -> None:
    table_dtype = torch.float32 if dtype != torch.float32 else None
    check_backend(LEVELS[name], dtype, "cuda", device="cuda", table_dtype=table_dtype)


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_noncontiguous_and_training_batch(dtype: torch.dtype) -> None:
    check_backend(Case(16, 1, 2, (28, 28), 32), dtype, "cuda", device="cuda", noncontiguous=True)


@needs_cuda
@pytest.mark.cuda
def test_cuda_table_gradient_is_bitwise_deterministic() -> None:
    case = Case(4, 2, 4, (14, 14), 32)
    inputs = make_inputs(case, torch.float16, device="cuda", seed=8, table_dtype=torch.float32)
    grads = []
    for _ in range(3):
        out = window_cross_attention(*inputs, case.window, backend="cuda")
        grads.append(torch.autograd.grad(out, inputs[3], torch.ones_like(out))[0])
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], grads[2])


@needs_cuda
@pytest.mark.cuda
def test_cuda_opcheck_and_explain() -> None:
    case = LEVELS["windows"]
    q, k, v, table = make_inputs(case, torch.bfloat16, device="cuda", seed=9,
                                 table_dtype=torch.float32)
    torch.library.opcheck(torch.ops.poster_fast.wmca_fwd.default, (q, k, v, table, 4, 4, 0.5))
    assert explain(q, k, v, table, case.window)["chosen"] in ("cuda", "triton")


@needs_cuda
@pytest.mark.cuda
def test_cuda_refuses_oversized_tiles_cleanly() -> None:
    # fp32, head_dim 128, 28x28 windows: the backward tiles exceed every GPU's shared memory.
    case = Case(1, 1, 1, (28, 28), 128)
    q, k, v, table = (t.detach() for t in make_inputs(case, torch.float32, device="cuda", seed=3))
    out, lse = torch.ops.poster_fast.wmca_fwd(q, k, v, table, 28, 28, 0.1)
    with pytest.raises(RuntimeError, match="shared memory"):
        torch.ops.poster_fast.wmca_bwd(torch.ones_like(out), q, k, v, table, out, lse, 28, 28, 0.1)
    torch.cuda.synchronize()  # no CUDA error left behind
    check_backend(LEVELS["windows"], torch.float32, "cuda", device="cuda")
