"""W-MCSA op benchmarks: one group per level, dtype and pass; one row per backend."""
from functools import lru_cache

import pytest
from conftest import DEVICE, DTYPES, OP_BATCH, OP_ROUNDS, median_s, run_benchmark

from poster_fast import bench
from poster_fast.ops import registered

BACKENDS = bench.BASELINES + tuple(n for n in registered() if n not in bench.BASELINES)


@lru_cache(maxsize=None)  # inputs shared by every backend (at most ~4 GB on a GPU)
def case_for(level: int, dtype: str) -> bench.OpCase:
    return bench.make_case(level, OP_BATCH, bench.DTYPES[dtype], DEVICE)


@pytest.mark.parametrize("level", sorted(bench.LEVELS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_op(benchmark, level, dtype, mode, backend):
    case = case_for(level, dtype)
    why = bench.skip_reasons(backend, case, requested=False)
    if why:
        pytest.skip("; ".join(why))
    fn = bench.op_function(backend, case)
    benchmark.group = f"op level {level} (W{case.window} N{case.tokens} H{case.heads}) {dtype} {mode}"
    flops = case.fwd_flops * (bench.FWDBWD_FACTOR if mode == "fwdbwd" else 1)
    benchmark.extra_info.update(level=level, backend=backend, dtype=dtype, mode=mode, batch=OP_BATCH,
                                flops=flops, max_rel_err=bench.max_rel_error(fn, case))
    fwd, fwd_bwd = bench.op_steps(fn, case)
    run_benchmark(benchmark, fwd if mode == "fwd" else fwd_bwd, OP_ROUNDS)
    if median_s(benchmark):
        benchmark.extra_info["tflops"] = flops / median_s(benchmark) / 1e12
