"""W-MCSA op benchmarks: one group per level, dtype and pass; one row per backend."""
from functools import lru_cache

import pytest
from conftest import DEVICE, DTYPES, OP_BATCH, OP_ROUNDS, median_s, run_benchmark

from poster_fast.benchmarking import op
from poster_fast.benchmarking.config import LEVELS


@lru_cache(maxsize=None)  # inputs shared by every backend (at most ~4 GB on a GPU)
def case_for(level: int, dtype: str) -> op.OpCase:
    return op.make_case(level, OP_BATCH, op.DTYPES[dtype], DEVICE)


@pytest.mark.parametrize("level", sorted(LEVELS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", op.PASSES)
@pytest.mark.parametrize("backend", op.known_backends())
def test_op(benchmark, level, dtype, mode, backend):
    case = case_for(level, dtype)
    why = op.skip_reasons(backend, case, requested=False)
    if why:
        pytest.skip("; ".join(why))
    fn = op.op_function(backend, case)
    benchmark.group = f"op level {level} (W{case.window} N{case.tokens} H{case.heads}) {dtype} {mode}"
    benchmark.extra_info.update(level=level, backend=backend, dtype=dtype, mode=mode, batch=OP_BATCH,
                                flops=case.flops(mode), bytes=case.bytes_moved(mode),
                                max_rel_err=op.max_rel_error(fn, case))
    fwd, fwd_bwd = op.op_steps(fn, case)
    run_benchmark(benchmark, fwd if mode == "fwd" else fwd_bwd, OP_ROUNDS)
    if median_s(benchmark):
        benchmark.extra_info["tflops"] = case.flops(mode) / median_s(benchmark) / 1e12
        benchmark.extra_info["gb_s"] = case.bytes_moved(mode) / median_s(benchmark) / 1e9
