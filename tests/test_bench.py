"""`poster-fast bench`: end to end in --quick mode (a smoke test: no timing asserts), its JSON
keys, the budget it reports, and clear errors for bad options."""
import json

import pytest
import torch

from poster_fast import bench
from poster_fast.cli import main

META_KEYS = {"date", "device", "device_name", "cpu_threads", "torch", "triton", "python", "command",
             "quick", "batch", "model_batch", "dtypes", "levels", "backends", "sections", "warmup",
             "iters", "model_warmup", "model_iters", "timing", "flops", "error"}
OP_KEYS = {"level", "window", "heads", "tokens", "head_dim", "batch", "dtype", "backend", "status", "reason"}
OP_TIMED_KEYS = {"fwd_ms", "fwdbwd_ms", "fwd_tflops", "fwdbwd_tflops", "max_rel_err", "fwd_speedup",
                 "fwdbwd_speedup"}
MODEL_ROW_KEYS = {"backend", "dtype", "batch", "infer_ms", "infer_img_s", "train_ms", "latency_b1_ms",
                  "infer_speedup", "train_speedup", "latency_b1_speedup"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "out" / "bench.json"
    assert main(["bench", "--quick", "--json", str(path)]) == 0
    return json.loads(path.read_text())


def test_quick_runs_end_to_end(quick_run, capsys):
    assert quick_run["schema"] == bench.SCHEMA and quick_run["complete"] is True
    assert set(quick_run) == {"schema", "complete", "meta", "budget", "ops", "model"}
    assert META_KEYS <= set(quick_run["meta"]) and quick_run["meta"]["quick"] is True
    assert quick_run["meta"]["command"].startswith("poster-fast bench --quick --json ")


def test_quick_op_rows(quick_run):
    rows = quick_run["ops"]
    assert {r["level"] for r in rows} == set(bench.LEVELS)
    for row in rows:
        assert OP_KEYS <= set(row) and row["status"] in ("ok", "skipped", "error")
        assert row["status"] == "ok" or row["reason"]
        if row["status"] == "ok" and row["backend"] != "flex":  # flex has no backward on CPU
            assert OP_TIMED_KEYS <= set(row) and row["max_rel_err"] < 1e-4
    timed = {r["backend"] for r in rows if r["status"] == "ok"}
    assert {"reference", "sdpa_mask"} <= timed
    if not torch.cuda.is_available():  # slow CPU paths are skipped with a reason unless requested
        triton = [r for r in rows if r["backend"] == "triton"]
        assert triton and all("interpreter only on CPU" in r["reason"] for r in triton)
        assert all("CUDA only" in r["reason"] for r in rows if r["backend"] == "flex")


def test_quick_model_rows(quick_run):
    model = quick_run["model"]
    assert {"fast_backend", "fast_backend_rule", "rows", "notes"} <= set(model)
    assert [r["backend"] for r in model["rows"]][0] == "reference"
    for row in model["rows"]:
        assert MODEL_ROW_KEYS <= set(row)


def test_budget_in_json(quick_run):
    b = quick_run["budget"]
    assert b["params"] == 43_753_941 and b["paper"] == {"params": 43.7e6, "macs": 8.4e9}
    assert abs(b["thop_macs"] - 8_482_266_176) <= 0.005 * 8_482_266_176
    if b["fvcore_macs"] is not None:
        assert abs(b["fvcore_macs"] - 8_612_845_056) <= 0.005 * 8_612_845_056


@pytest.mark.parametrize("argv,message", [
    (["--backends", "nope"], "unknown backend 'nope'"),
    (["--batch", "0"], "expected an integer >= 1, got '0'"),
    (["--batch", "x"], "expected an integer >= 1, got 'x'"),
    (["--levels", "4"], "expected a comma-separated list from 1, 2, 3"),
    (["--dtypes", "fp8"], "expected a comma-separated list from fp32, bf16, fp16"),
])
def test_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_requested_without_gpu(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--device", "cuda"])
    assert "no CUDA GPU is visible" in capsys.readouterr().err


def test_failing_backend_is_reported_not_fatal(monkeypatch):
    case = bench.make_case(3, 1, torch.float32, torch.device("cpu"))

    def broken(name, case):
        raise RuntimeError("kernel exploded")
    monkeypatch.setattr(bench, "op_function", broken)
    cfg = bench.Config(torch.device("cpu"), 1, 1, ["fp32"], [3], ["reference"], set(), 0, 1, 0, 1,
                       ["ops"], False, 1)
    rows = bench.op_rows(cfg, bench.Progress(enabled=False))
    assert rows[0]["status"] == "error" and "kernel exploded" in rows[0]["reason"]
    assert "error" in bench.format_ops(rows) and case.fwd_flops == 4 * 8 * 49 * 49 * 32
