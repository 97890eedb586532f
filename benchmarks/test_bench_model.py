"""Model benchmarks (one group per mode and dtype; reference vs the fastest backend) and the
budget, whose counts are this group's extra_info (asserted in tests/test_budget.py)."""
import pytest
from conftest import DEVICE, DTYPES, MODEL_BATCH, MODEL_ROUNDS, run_benchmark

from poster_fast import POSTERV2
from poster_fast.benchmarking.model import ModelBench
from poster_fast.benchmarking.op import fastest_backend
from poster_fast.budget import PAPER, budget

FAST, FAST_RULE = fastest_backend([], DEVICE)


@pytest.fixture(scope="module")
def model_bench() -> ModelBench:
    return ModelBench(DEVICE, MODEL_BATCH)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["infer", "train", "latency"])
@pytest.mark.parametrize("backend", ["reference", FAST] if FAST != "reference" else ["reference"])
def test_model(benchmark, model_bench, backend, mode, dtype):
    batch = 1 if mode == "latency" else MODEL_BATCH
    benchmark.group = f"model {mode} {dtype} batch {batch}"
    benchmark.extra_info.update(backend=backend, fast_backend_rule=FAST_RULE, mode=mode, dtype=dtype, batch=batch)
    run_benchmark(benchmark, model_bench.step(mode, backend, dtype), MODEL_ROUNDS)


def test_budget(benchmark):
    b = benchmark.pedantic(lambda: budget(POSTERV2(num_classes=7)), rounds=1, iterations=1)
    benchmark.group = "budget"
    benchmark.extra_info.update(
        params=b.params, params_8_classes=sum(p.numel() for p in POSTERV2(num_classes=8).parameters()),
        thop_params=b.thop_params, thop_macs=b.thop_macs, fvcore_macs=b.fvcore_macs,
        fvcore_missing=b.fvcore_missing, paper_params=PAPER["params"], paper_macs=PAPER["macs"])
    assert b.params == 43_753_941  # the model under test is POSTER V2 at all
