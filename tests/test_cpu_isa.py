"""Every compiled build (ISA) of the CPU W-MCSA kernels that this CPU can run, against the reference.

The extension holds one build per instruction set (`torch.ops.poster_fast.cpu_isas(all=True)`):
avx512, avx2 (x86-64), generic (baseline, 32-byte vectors) and generic512 (baseline with the
AVX-512 build's 64-byte vectors and 8-row tiles, so that its tiling runs on any CPU). Each test
runs once per build, named in its id; builds this CPU cannot run are skipped with the reason.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest
import torch

from poster_fast.ops import extension, window_cross_attention
from wmca_utils import (Case, assert_within_reference_error, forward_and_grads, level_cases, make_inputs,
                        reference_results)

pytestmark = pytest.mark.skipif(extension._C is None, reason="poster_fast._C is not built")

OPS = torch.ops.poster_fast if extension._C is not None else None
COMPILED = OPS.cpu_isas(True) if OPS is not None else []
USABLE = OPS.cpu_isas() if OPS is not None else []
ISAS = [pytest.param(name, id=name, marks=pytest.mark.skipif(
    name not in USABLE, reason=f"{name}: compiled, but this CPU cannot run it")) for name in COMPILED]

# Shapes chosen for the padding: N and D off every vector multiple, query blocks (64 rows) with
# ragged tails off the 4- and 8-row register tiles, several windows (dq reduced over windows).
CASES = {
    **level_cases(lambda i: min(i, 2), name="level{}"),
    "windows": Case(2, 3, 2, (4, 4), 32),
    "nonsquare": Case(1, 2, 3, (3, 5), 20),
    "ragged": Case(1, 2, 2, (9, 11), 40),
    "d64": Case(1, 2, 2, (6, 6), 64),
    "tiny": Case(3, 1, 1, (1, 2), 3),
}


@contextlib.contextmanager
def using_isa(name: str):
    previous = OPS.set_cpu_isa(name)
    try:
        assert OPS.cpu_isa() == name
        yield
    finally:
        OPS.set_cpu_isa(previous)


def check(case: Case, dtype: torch.dtype, table_dtype: torch.dtype | None = None,
          noncontiguous: bool = False, seed: int | None = None) -> None:
    inputs = make_inputs(case, dtype, seed=seed, table_dtype=table_dtype, noncontiguous=noncontiguous)
    grad = torch.randn(case.batch * case.windows, case.heads, case.tokens, case.head_dim).to(dtype)
    exact, same = reference_results(inputs, case.window, grad)
    got = forward_and_grads(inputs, case.window, "cpu", grad)
    for g, t in zip(got, [inputs[0]] + inputs):  # out in q's dtype, each gradient in its input's
        assert g.dtype == t.dtype
    assert_within_reference_error(got, exact, same)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_float32(isa: str, name: str) -> None:
    with using_isa(isa):
        check(CASES[name], torch.float32)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("table", ["same", "float32"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", ["level2", "windows", "ragged"])
def test_half_precision(isa: str, name: str, dtype: torch.dtype, table: str) -> None:
    with using_isa(isa):
        check(CASES[name], dtype, table_dtype=torch.float32 if table == "float32" else None)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16],
                         ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("name", ["level3", "windows", "ragged"])
def test_noncontiguous(isa: str, name: str, dtype: torch.dtype) -> None:
    with using_isa(isa):
        check(CASES[name], dtype, noncontiguous=True)


@pytest.mark.parametrize("isa", ISAS)
def test_sliced_and_broadcast_inputs(isa: str) -> None:
    """Views with a storage offset, a non-unit innermost stride and a stride-0 (expanded) dim."""
    case = CASES["windows"]
    gen = torch.Generator().manual_seed(11)
    n, d, h, bw = case.tokens, case.head_dim, case.heads, case.batch * case.windows
    bases = [torch.randn(case.batch, h, n, 2 * d, generator=gen), torch.randn(bw + 1, h, n, d, generator=gen),
             torch.randn(1, h, n, d, generator=gen), torch.randn(2 * h, 49, generator=gen)]
    bases = [b.requires_grad_() for b in bases]
    views = (bases[0][..., ::2], bases[1][1:], bases[2].expand(bw, h, n, d), bases[3].t()[:, ::2])
    grad = torch.randn(bw, h, n, d, generator=gen)
    results = []
    for backend in ("cpu", "reference"):
        with using_isa(isa):
            out = window_cross_attention(*views, case.window, backend=backend)
        results.append([out, *torch.autograd.grad(out, bases, grad)])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("isa", ISAS)
def test_float64_matches_reference_tightly(isa: str) -> None:
    case = CASES["ragged"]
    inputs = make_inputs(case, torch.float64, seed=3)
    grad = torch.randn(case.batch * case.windows, case.heads, case.tokens, case.head_dim,
                       dtype=torch.float64)
    with using_isa(isa):
        got = forward_and_grads(inputs, case.window, "cpu", grad, scale=0.3)
    exact = forward_and_grads(inputs, case.window, "reference", grad, scale=0.3)
    for g, e in zip(got, exact):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_conversions_round_to_nearest_even(isa: str, dtype: torch.dtype) -> None:
    """Two keys with equal logits: out = (v0 + v1) / 2 computed in fp32 and rounded once.

    v holds every bit pattern of the dtype (NaN and inf included), so reading them and rounding
    the results (ties, subnormals, overflow) are compared bit for bit with torch's conversions.
    """
    every = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype)
    v = torch.stack([every, every[torch.randperm(every.numel(), generator=torch.Generator().manual_seed(0))]])
    v = v.reshape(1, 1, 2, -1)
    q, k = torch.zeros_like(v), torch.zeros_like(v)
    table = torch.zeros(3, 1, dtype=dtype)
    with using_isa(isa):
        out, lse = OPS.wmca_fwd(q, k, v, table, 1, 2, 1.0)
    want = ((v[0, 0, 0].float() + v[0, 0, 1].float()) * 0.5).to(dtype)
    assert out.dtype == dtype and lse.dtype == torch.float32
    nan = want.isnan()
    for row in out[0, 0]:  # equal values (a zero's sign may differ: the kernel's sums start at +0)
        assert torch.equal(row.isnan(), nan)
        assert torch.equal(row[~nan].float(), want[~nan].float())


def _table_grad(case: Case, dtype: torch.dtype, threads: int) -> torch.Tensor:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        inputs = make_inputs(case, dtype, seed=5)
        out = window_cross_attention(*inputs, case.window, backend="cpu")
        return torch.autograd.grad(out, inputs[3], torch.ones_like(out))[0]
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_table_gradient_is_bitwise_deterministic(isa: str, dtype: torch.dtype) -> None:
    case = Case(3, 2, 2, (7, 7), 32)
    with using_isa(isa):
        first = _table_grad(case, dtype, 2)
        for threads in (2, 1, 3):
            assert torch.equal(first, _table_grad(case, dtype, threads)), f"{threads} threads"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f
                         if line.startswith("flags")), set())
    except OSError:
        return set()


@pytest.mark.skipif(not _cpu_flags(), reason="needs /proc/cpuinfo to know the CPU's features")
def test_auto_picks_the_best_build_this_cpu_supports() -> None:
    flags = _cpu_flags()
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl", "fma", "f16c"} <= flags:
        expected = "avx512"
    elif {"avx2", "fma", "f16c"} <= flags:
        expected = "avx2"
    else:
        expected = "generic"
    assert expected in USABLE and "generic" in USABLE and "generic512" in USABLE
    previous = OPS.set_cpu_isa("auto")
    try:
        assert OPS.cpu_isa() == expected
    finally:
        OPS.set_cpu_isa(previous)


def test_set_cpu_isa_rejects_unknown_and_unusable_names() -> None:
    before = OPS.cpu_isa()
    with pytest.raises(RuntimeError, match="set_cpu_isa: expected one of auto, .*got 'sse9'"):
        OPS.set_cpu_isa("sse9")
    unusable = [n for n in COMPILED if n not in USABLE]
    for name in unusable:
        with pytest.raises(RuntimeError, match=f"the {name} CPU kernels cannot run on this CPU"):
            OPS.set_cpu_isa(name)
    assert OPS.cpu_isa() == before


def _run_with_env(isa: str, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "POSTER_FAST_CPU_ISA": isa}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)


def test_environment_variable_selects_the_isa() -> None:
    code = ("import torch, poster_fast.ops.extension; "
            "print(torch.ops.poster_fast.cpu_isa())")
    done = _run_with_env("generic512", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "generic512"
    code = ("import torch, poster_fast.ops.extension; x = torch.zeros(1, 1, 1, 4); "
            "torch.ops.poster_fast.wmca_fwd(x, x, x, torch.zeros(1, 1), 1, 1, 1.0)")
    done = _run_with_env("sse9", code)
    assert done.returncode != 0
    assert "POSTER_FAST_CPU_ISA: expected one of auto" in done.stderr
