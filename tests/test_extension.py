"""What is specific to the compiled kernels of poster_fast._C (the shared backend suite is
tests/ops/test_backends.py): the C++ argument checks, float64 and the LSE on the CPU, thread
count independence, and the "cuda" declaration against the extension's own limits.

The declaration tests need a CUDA build of _C but no GPU (fake device properties):
`make cuda-build-check` runs this file against such a build on the CPU.
"""
from __future__ import annotations

import random

import pytest
import torch

from poster_fast import ops
from poster_fast.ops import backend, extension, window_cross_attention
from poster_fast.ops.backend import CudaDevice
from poster_fast.ops.backends import cuda as cuda_backend
from poster_fast.ops.backends import triton as triton_backend
from poster_fast.ops.reference import relative_position_bias
from wmca_utils import Case, check_backend, forward_and_grads, make_inputs

pytestmark = pytest.mark.skipif(extension._C is None, reason="poster_fast._C is not built")
cuda_build = pytest.mark.skipif(not extension.WITH_CUDA, reason="needs a CUDA build of _C")
needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and extension.WITH_CUDA),
                               reason="needs a CUDA GPU and a CUDA build")
WINDOWS = Case(2, 3, 2, (4, 4), 32)
# Opt-in shared memory per block of an A100 / H100, and a GPU below the kernels' sm_80.
A100, H100, TURING = CudaDevice((8, 0), 166912), CudaDevice((9, 0), 232448), CudaDevice((7, 5), 65536)


def test_cpu_float64_matches_reference_tightly() -> None:
    case = Case(1, 2, 3, (3, 5), 20)
    inputs = make_inputs(case, torch.float64, seed=3)
    grad = torch.randn(case.out_shape, dtype=torch.float64)
    got = forward_and_grads(inputs, case.window, "cpu", grad, scale=0.3)
    exact = forward_and_grads(inputs, case.window, "reference", grad, scale=0.3)
    for g, e in zip(got, exact):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_cpu_lse() -> None:
    q, k, v, table = (t.detach() for t in make_inputs(WINDOWS, torch.float32, seed=4))
    out, lse = torch.ops.poster_fast.wmca_fwd(q, k, v, table, 4, 4, 0.25)
    q_win = q.repeat_interleave(WINDOWS.windows, dim=0)
    logits = 0.25 * q_win @ k.transpose(-1, -2) + relative_position_bias(table, WINDOWS.window)
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
    q, k, v, table = (t.detach() for t in make_inputs(WINDOWS, torch.float32, seed=0))
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


def test_cpu_table_gradient_is_independent_of_the_thread_count() -> None:
    case = Case(3, 2, 2, (7, 7), 32)
    first = _table_grad(case, 2)
    assert torch.equal(first, _table_grad(case, 1))
    assert torch.equal(first, _table_grad(case, 3))


# ---------------------------------------------------------------- the "cuda" declaration
def _cuda_problem(case: Case, dtype: torch.dtype) -> ops.WindowProblem:
    return ops.WindowProblem(case.batch, case.windows, case.heads, case.tokens, case.head_dim,
                             case.window, 0.1, dtype, torch.device("cuda"))


def _launcher_refuses(p: ops.WindowProblem, device: CudaDevice) -> str:
    return extension._C.cuda_unsupported(str(p.dtype)[6:], p.batch, p.windows, p.heads,
                                         p.tokens, p.head_dim, *p.window,
                                         device.shared_memory_per_block_optin)


@cuda_build
def test_cuda_declaration_reads_the_extension_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    assert backend.get("cuda").max_head_dim == extension._C.cuda_max_head_dim
    monkeypatch.setattr(backend, "cuda_device", lambda device: H100)
    # fp32, head_dim 128, 28x28 windows: the backward tiles exceed every GPU's shared memory
    oversized = _cuda_problem(Case(1, 1, 1, (28, 28), 128), torch.float32)
    assert any("shared memory" in why for why in ops.reasons("cuda", oversized))
    too_many_windows = _cuda_problem(Case(2, 40000, 1, (2, 2), 16), torch.float16)
    assert any("65535" in why for why in ops.reasons("cuda", too_many_windows))
    assert ops.reasons("cuda", _cuda_problem(WINDOWS, torch.bfloat16)) == []
    monkeypatch.setattr(backend, "cuda_device", lambda device: TURING)
    assert ops.reasons("cuda", _cuda_problem(WINDOWS, torch.bfloat16)) == [
        "compute capability 7.5 < 8.0 required"]


@cuda_build
@pytest.mark.parametrize("device", [A100, H100], ids=["A100", "H100"])
def test_auto_never_picks_cuda_for_a_problem_the_launcher_refuses(
        monkeypatch: pytest.MonkeyPatch, device: CudaDevice) -> None:
    """Without triton, auto picks cuda exactly for the problems the C++ launcher accepts."""
    monkeypatch.setattr(backend, "cuda_device", lambda d: device)
    monkeypatch.setattr(triton_backend, "FOUND", False)
    rng = random.Random(0)
    picked = set()
    for _ in range(300):
        case = Case(rng.choice([1, 8, 144]), rng.choice([1, 4, 500]), rng.choice([1, 2, 8]),
                    (rng.randint(1, 40), rng.randint(1, 40)), rng.choice([16, 32, 64, 128, 160]))
        dtype = rng.choice([torch.float32, torch.float16, torch.bfloat16, torch.float64])
        p = _cuda_problem(case, dtype)
        chosen = backend.select("auto", p).name
        runs = dtype != torch.float64 and case.head_dim <= 128 and not _launcher_refuses(p, device)
        assert chosen == ("cuda" if runs else "reference"), (case, dtype, chosen)
        picked.add(chosen)
    assert picked == {"cuda", "reference"}


@cuda_build
def test_cuda_limits_trace_under_torch_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled check is evaluated once while tracing, even for symbolic sizes."""
    monkeypatch.setattr(backend, "cuda_device", lambda d: H100)

    def refused(q: torch.Tensor) -> torch.Tensor:
        b, h, n, d = q.shape
        p = ops.WindowProblem(b, 1, h, n, d, (28, 28), 0.1, q.dtype, torch.device("cuda"))
        return q.sum() if cuda_backend.BACKEND.reasons(p) else q.sum() * 0

    torch._dynamo.reset()
    compiled = torch.compile(refused, fullgraph=True, backend="eager", dynamic=True)
    assert compiled(torch.ones(1, 1, 784, 128)).item() > 0  # fp32 tiles too large
    assert compiled(torch.ones(1, 1, 784, 32, dtype=torch.bfloat16)).item() == 0


@needs_gpu
@pytest.mark.cuda
def test_cuda_refuses_oversized_tiles_cleanly() -> None:
    case = Case(1, 1, 1, (28, 28), 128)
    q, k, v, table = (t.detach() for t in make_inputs(case, torch.float32, device="cuda", seed=3))
    assert ops.explain(q, k, v, table, case.window)["chosen"] != "cuda"
    with pytest.raises(RuntimeError, match="shared memory"):
        torch.ops.poster_fast.wmca_fwd(q, k, v, table, 28, 28, 0.1)
    torch.cuda.synchronize()  # no CUDA error left behind
    check_backend("cuda", WINDOWS, torch.float32, device="cuda")
