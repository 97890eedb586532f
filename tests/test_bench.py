"""`poster-fast bench` and benchmarks/gpu_check.sh: a quick run end to end (a smoke test: no
timing asserts), the JSON written row by row and kept when a run is cut, the floors (FLOPs,
bytes, % of peak), one backend list, and clear errors for bad options."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from poster_fast.benchmarking import cards, config, model, op, report, runner
from poster_fast.benchmarking.timing import Progress
from poster_fast.commands.cli import main

ROOT = Path(__file__).resolve().parents[1]
META_KEYS = {"date", "device", "device_name", "card", "cpu_threads", "torch", "triton", "python", "command",
             "quick", "batch", "model_batch", "dtypes", "levels", "backends", "sections", "warmup",
             "iters", "model_warmup", "model_iters", "time_limit", "timing", "flops", "bytes", "peak", "error"}
OP_KEYS = {"level", "window", "heads", "tokens", "head_dim", "batch", "dtype", "backend", "status", "reason"}
FLOOR_KEYS = {"fwd_flops", "fwdbwd_flops", "fwd_bytes", "fwdbwd_bytes", "peak_tflops", "peak_gb_s"}
TIMED_KEYS = {f"{p}_{k}" for p in op.PASSES for k in ("ms", "tflops", "gb_s", "flops_pct", "bw_pct", "speedup")}
MODEL_ROW_KEYS = {"backend", "dtype", "batch", "status", "reason", "infer_ms", "infer_img_s", "train_ms",
                  "latency_b1_ms", "infer_speedup", "train_speedup", "latency_b1_speedup", "infer_vs_fp32",
                  "train_vs_fp32", "latency_b1_vs_fp32"}


def small_config(**changes) -> config.Config:
    base = dict(device=torch.device("cpu"), batch=1, model_batch=1, dtypes=["fp32"], levels=[3],
                backends=["reference", "sdpa_mask"], requested=set(), warmup=0, iters=1, model_warmup=0,
                model_iters=1, sections=["ops"], quick=True, threads=1)
    return config.Config(**{**base, **changes})


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "out" / "bench.json"
    assert main(["bench", "--quick", "--json", str(path)]) == 0
    return json.loads(path.read_text())


def test_quick_runs_end_to_end(quick_run):
    assert quick_run["schema"] == config.SCHEMA and quick_run["complete"] is True and quick_run["cut"] is None
    assert set(quick_run) == {"schema", "complete", "cut", "meta", "budget", "ops", "model", "roofline", "profile"}
    assert META_KEYS <= set(quick_run["meta"]) and quick_run["meta"]["quick"] is True
    assert quick_run["meta"]["command"].startswith("poster-fast bench --quick --json ")


def test_quick_op_rows(quick_run):
    rows = quick_run["ops"]
    assert {r["level"] for r in rows} == set(config.LEVELS)
    for row in rows:
        assert OP_KEYS | FLOOR_KEYS <= set(row) and row["status"] in ("ok", "skipped")
        assert row["status"] == "ok" or row["reason"]
        if row["status"] == "ok":
            assert TIMED_KEYS <= set(row) and row["max_rel_err"] < 1e-4
            if not torch.cuda.is_available():  # a CPU: no peak table entry
                assert row["fwd_flops_pct"] is None and row["fwdbwd_bw_pct"] is None
    timed = {r["backend"] for r in rows if r["status"] == "ok"}
    assert {"reference", "sdpa_mask"} <= timed
    # Timing order: the fused backends (registry order), the baselines, flex last of all.
    names = [r["backend"] for r in rows]
    fused = op.fused_backends()
    assert names[-len(config.LEVELS):] == ["flex"] * len(config.LEVELS)
    level1 = [r["backend"] for r in rows if r["level"] == 1 and r["backend"] != "flex"]
    assert level1 == fused + ["reference", "sdpa_mask"]
    if not torch.cuda.is_available():  # slow CPU paths are skipped with a reason unless requested
        triton = [r for r in rows if r["backend"] == "triton"]
        assert triton and all("request it with --backends triton" in r["reason"] for r in triton)
        assert all("CUDA only" in r["reason"] for r in rows if r["backend"] == "flex")


def test_quick_model_rows(quick_run):
    model_ = quick_run["model"]
    assert {"fast_backend", "fast_backend_rule", "rows", "notes"} <= set(model_)
    assert any(n.startswith("predict's --precision auto here: ") for n in model_["notes"])
    assert [r["backend"] for r in model_["rows"]][0] == "reference"
    for row in model_["rows"]:
        assert MODEL_ROW_KEYS <= set(row) and row["status"] == "ok"


def test_quick_roofline_and_profile(quick_run):
    """One row per dtype this CPU computes natively (fp32, and bf16 where native), each measured."""
    from poster_fast.benchmarking.roofline import roofline_dtypes

    dtypes = roofline_dtypes(torch.device("cpu"), None)
    roof, prof = quick_run["roofline"], quick_run["profile"]
    assert [r["dtype"] for r in roof["rows"]] == [r["dtype"] for r in prof["rows"]] == dtypes
    for row in roof["rows"]:
        assert row["status"] == "ok" and row["fraction"] == pytest.approx(row["model_gflop_s"] / row["conv_gflop_s"])
        assert row["model_gflop_s"] == pytest.approx(roof["flops_per_image"] / row["model_ms_per_image"] / 1e6)
        assert row["latency_b1_ms"] > 0 and row["linear_path"] in ("aten", "onednn")
    for row in prof["rows"]:
        classes = {c["op_class"]: c for c in row["classes"]}
        assert row["status"] == "ok" and {"convolution", "linear", "attention"} <= set(classes)
        assert sum(c["share"] for c in row["classes"]) == pytest.approx(1.0)


def test_budget_in_json(quick_run):
    b = quick_run["budget"]
    assert b["params"] == 43_753_941 and b["paper"] == {"params": 43.7e6, "macs": 8.4e9}
    assert abs(b["thop_macs"] - 8_482_266_176) <= 0.005 * 8_482_266_176
    if b["fvcore_macs"] is not None:
        assert abs(b["fvcore_macs"] - 8_612_845_056) <= 0.005 * 8_612_845_056


# --------------------------------------------------------------------- row by row, cut runs
def test_json_is_written_after_every_row(tmp_path, monkeypatch):
    path = tmp_path / "bench.json"
    seen: list[list[str]] = []
    measure = op.measure_row

    def spy(row, *args):  # the file on disk, just before each row is measured
        seen.append([r["status"] for r in json.loads(path.read_text())["ops"]])
        measure(row, *args)
    monkeypatch.setattr(op, "measure_row", spy)
    cfg = small_config(levels=[2, 3])
    result = runner.run(cfg, json_path=path, progress=Progress(enabled=False))
    assert seen == [["running", "pending", "pending", "pending"], ["ok", "running", "pending", "pending"],
                    ["ok", "ok", "running", "pending"], ["ok", "ok", "ok", "running"]]
    assert result["complete"] and json.loads(path.read_text()) == json.loads(json.dumps(result))


def test_interrupted_run_keeps_finished_rows(tmp_path, monkeypatch, capsys):
    """SIGINT (what gpu_check.sh's timeout sends) in the third row: the first two stay, the rest
    are cut, the tables print, and the JSON says why."""
    path = tmp_path / "bench.json"
    measure, calls = op.measure_row, []

    def interrupt_third(row, *args):
        calls.append(row["backend"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        measure(row, *args)
    monkeypatch.setattr(op, "measure_row", interrupt_third)
    cfg = small_config(levels=[2, 3], sections=["ops", "infer"])
    result = runner.run(cfg, json_path=path, progress=Progress(enabled=False))
    on_disk = json.loads(path.read_text())
    assert [r["status"] for r in on_disk["ops"]] == ["ok", "ok", "cut", "cut"]
    assert "fwd_ms" in on_disk["ops"][1] and on_disk["ops"][1]["fwd_speedup"] > 0
    assert on_disk["complete"] is False and on_disk["cut"] == result["cut"] == "interrupted (SIGINT)"
    assert on_disk["model"] is None  # never reached
    assert "not run: interrupted" in capsys.readouterr().out


def test_time_limit_cuts_rows_not_started(tmp_path):
    cfg = small_config(time_limit=0.0, sections=["ops", "infer"])
    result = runner.run(cfg, json_path=tmp_path / "b.json", progress=Progress(enabled=False))
    rows = result["ops"] + result["model"]["rows"]
    assert rows and all(r["status"] == "cut" and "time limit" in r["reason"] for r in rows)
    assert result["complete"] is False and "time limit" in result["cut"]


def test_command_exits_130_when_interrupted(tmp_path, monkeypatch):
    def interrupt(row, *args):
        raise KeyboardInterrupt
    monkeypatch.setattr(op, "measure_row", interrupt)
    path = tmp_path / "b.json"
    argv = ["bench", "--device", "cpu", "--levels", "3", "--batch", "1", "--sections", "ops",
            "--backends", "reference", "--json", str(path)]
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert main(argv) == 130 and json.loads(path.read_text())["ops"][0]["status"] == "cut"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # restored


def test_failing_backend_is_reported_not_fatal(monkeypatch):
    def broken(name, case):
        raise RuntimeError("kernel exploded")
    monkeypatch.setattr(op, "op_function", broken)
    result = runner.run(small_config(backends=["reference"]), progress=Progress(enabled=False))
    row = result["ops"][0]
    assert row["status"] == "error" and "kernel exploded" in row["reason"]
    assert "error" in report.format_ops(result["ops"], None)


# ------------------------------------------------------------------------------- floors
def test_floors_of_level_3():
    """FLOPs and minimum bytes, worked out by hand: level 3, batch 2, fp32, an fp32 table.
    Q = KV = 2*8*49*32 = 25088 elements, 169*8 = 1352 table entries, L = 2*8*49 = 784."""
    case = op.make_case(3, 2, torch.float32, torch.device("cpu"))
    assert case.flops("fwd") == 4 * 2 * 8 * 49 * 49 * 32 and case.flops("fwdbwd") == 3.5 * case.flops("fwd")
    assert case.bytes_moved("fwd") == 4 * (25088 + 3 * 25088) + 4 * 1352
    assert case.bytes_moved("fwdbwd") == 4 * (3 * 25088 + 9 * 25088) + 3 * 4 * 1352 + 8 * 784
    half = op.make_case(3, 2, torch.bfloat16, torch.device("cpu"))
    assert half.bytes_moved("fwd") == 2 * (4 * 25088) + 2 * 1352  # the table is bf16 too


@pytest.mark.parametrize("name,card", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"), ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200 SXM"), ("NVIDIA H200 NVL", "H200 NVL"), ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB"),
    ("NVIDIA A100-SXM4-40GB", "A100 SXM 40GB"), ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB"),
    ("NVIDIA A100-PCIE-40GB", "A100 PCIe 40GB"), ("NVIDIA GeForce RTX 4090", None), ("", None), (None, None),
])
def test_card_table(name, card):
    found = cards.card_for(name)
    assert (found.name if found else None) == card


def test_rates_and_percent_of_peak():
    case = op.make_case(3, 2, torch.bfloat16, torch.device("cpu"))
    h100 = cards.card_for("NVIDIA H100 80GB HBM3")
    row, unknown = op._row(3, 2, "bf16", "triton"), op._row(3, 2, "bf16", "triton")
    op.add_floors(row, case, h100)
    op.add_rates(row, "fwd", 0.01, case, h100)  # 10 microseconds
    tflops = case.flops("fwd") / 1e-5 / 1e12
    gb_s = case.bytes_moved("fwd") / 1e-5 / 1e9
    assert row["fwd_tflops"] == pytest.approx(tflops) and row["fwd_gb_s"] == pytest.approx(gb_s)
    assert row["fwd_flops_pct"] == pytest.approx(100 * tflops / 989.5)  # dense BF16 peak
    assert row["fwd_bw_pct"] == pytest.approx(100 * gb_s / 3350)
    assert row["peak_tflops"] == 989.5 and h100.peak_tflops("fp32") == 494.5  # fp32 inputs: TF32
    op.add_floors(unknown, case, None)
    op.add_rates(unknown, "fwd", 0.01, case, None)
    assert unknown["fwd_tflops"] == pytest.approx(tflops)
    assert unknown["fwd_flops_pct"] is unknown["fwd_bw_pct"] is unknown["peak_tflops"] is None
    table = report.format_ops([{**unknown, "status": "ok"}], None).splitlines()
    assert "no % of peak" in table[1]
    cells = table[4].split()
    assert cells[cells.index("bf16") + 2:][3] == "-"  # fwd ms, x eager, TFLOP/s, then %pk


def test_speedups_link_rows_timed_before_the_reference():
    rows = [op._row(3, 1, "fp32", "triton"), op._row(3, 1, "fp32", "reference")]
    rows[0].update(fwd_ms=1.0)
    op.link_speedups(rows)
    assert "fwd_speedup" not in rows[0]  # no reference time yet
    rows[1].update(fwd_ms=4.0)
    op.link_speedups(rows)
    assert rows[0]["fwd_speedup"] == 4.0 and rows[1]["fwd_speedup"] == 1.0


def test_model_speedups_and_plan():
    rows = model.plan_rows(small_config(dtypes=["fp32", "bf16"]), "cpu")
    assert [(r["dtype"], r["backend"]) for r in rows] == [
        ("fp32", "reference"), ("fp32", "cpu"), ("fp32", "optimize(cpu)"),
        ("bf16", "reference"), ("bf16", "cpu"), ("bf16", "optimize(cpu)")]
    rows[0].update(train_ms=3.0)
    rows[1].update(train_ms=2.0)
    model.link_speedups(rows)
    assert rows[1]["train_speedup"] == 1.5 and "train_speedup" not in rows[3]
    rows[3].update(infer_ms=8.0)
    rows[5].update(infer_ms=2.0)
    rows[0].update(infer_ms=6.0)
    model.link_speedups(rows)
    assert rows[5]["infer_speedup"] == 4.0 and rows[5]["infer_vs_fp32"] == 3.0 and rows[3]["infer_vs_fp32"] == 0.75


def test_model_plan_keeps_the_fp32_baseline():
    """Without fp32 among the dtypes, the plain fp32 model is still timed first: the x fp32 baseline."""
    rows = model.plan_rows(small_config(dtypes=["bf16", "fp16"]), "cpu")
    assert [(r["dtype"], r["backend"], r["optimized"]) for r in rows] == [
        ("fp32", "reference", False),
        ("bf16", "reference", False), ("bf16", "cpu", False), ("bf16", "optimize(cpu)", True),
        ("fp16", "reference", False), ("fp16", "cpu", False), ("fp16", "optimize(cpu)", True)]


# ------------------------------------------------------------------------ backend list
def test_backends_come_from_the_registry(monkeypatch):
    monkeypatch.setattr(op.ops, "registered", lambda: ("zeta", "reference", "alpha"))
    assert op.known_backends() == ["zeta", "alpha", "reference", "sdpa_mask", "flex"]
    first, last = op.plan_rows(small_config(backends=op.known_backends(), levels=[3]))
    assert [r["backend"] for r in first] == ["zeta", "alpha", "reference", "sdpa_mask"]
    assert [r["backend"] for r in last] == ["flex"]


# ------------------------------------------------------------------------------ options
@pytest.mark.parametrize("argv,message", [
    (["--batch", "0"], "expected an integer >= 1, got '0'"),
    (["--batch", "x"], "expected an integer >= 1, got 'x'"),
    (["--levels", "4"], "expected a comma-separated list from 1, 2, 3"),
    (["--dtypes", "fp8"], "expected a comma-separated list from fp32, bf16, fp16"),
    (["--time-limit", "0"], "expected seconds >= 1, got '0'"),
    (["--clock", "tsc"], "argument --clock: invalid choice: 'tsc'"),
])
def test_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_unknown_backend_one_line(capsys):
    assert main(["bench", "--backends", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--backends: unknown backend 'nope'; known: " in err
    assert main(["bench", "--model-backend", "sdpa_mask"]) == 2  # a baseline, not a registered backend
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model-backend: unknown backend 'sdpa_mask'; known: " in err


def test_model_backend_named(tmp_path):
    """--model-backend sets the model rows' backend without op rows (gpu_check.sh's model step)."""
    cfg = small_config(sections=["latency"], model_backend="reference")
    result = runner.run(cfg, json_path=tmp_path / "b.json", progress=Progress(enabled=False))
    m = result["model"]
    assert (m["fast_backend"], m["fast_backend_rule"]) == ("reference", "named with --model-backend")
    assert [r["backend"] for r in m["rows"]] == ["reference", "optimize(reference)"]
    assert all(r["status"] == "ok" for r in m["rows"]) and result["meta"]["model_backend"] == "reference"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_requested_without_gpu(capsys):
    assert main(["bench", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err == "poster-fast bench: error: --device cuda: no CUDA GPU is visible to torch\n"


# ----------------------------------------------------------------------- gpu_check.sh
def test_gpu_check_summary_prints_when_no_time_is_left(tmp_path):
    """With no budget every step is cut before it starts; the summary still prints what was cut."""
    env = {**os.environ, "OUT": str(tmp_path), "GPU_CHECK_BUDGET": "1", "PY": sys.executable}
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 3, out + proc.stderr
    assert "GPU check summary (dry-run" in out and "bench ops (cut): no JSON" in out
    steps = [line.split()[:2] for line in out.splitlines() if line.startswith("  ")]
    for step in ("machine", "build", "import", "ops", "ops-cpu", "model", "tests", "all-configs"):
        assert [step, "cut"] in steps, step
    assert "RESULT: not all ran" in out
    assert (tmp_path / "gpu_check" / "summary.txt").read_text() in out


@pytest.mark.parametrize("argv,message", [
    (["--fault", "triton"], "--fault is for the dry run only"),
    (["--dry-run", "--fault", "reference"], "--fault reference: expected the backend of a bench group (triton cpu)"),
    (["--dry-run", "--fault"], "--fault needs a backend"),
    (["--bogus"], "unknown argument '--bogus'"),
])
def test_gpu_check_usage_errors(argv, message, tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PY": sys.executable}
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "gpu_check").exists()  # nothing written, nothing removed


def _summary(tmp_path, steps: list[tuple], *args: str) -> subprocess.CompletedProcess:
    """gpu_check_summary.py summary on the given step rows (name, status, rc, log text, bench JSON)."""
    lines = []
    for i, (name, status, rc, log, bench) in enumerate(steps):
        log_path = tmp_path / f"{i:02d}-{name}.log"
        log_path.write_text(f"$ the command\n{log}")
        json_path = "-"
        if bench is not None:
            json_path = tmp_path / f"bench-{name}.json"
            json_path.write_text(json.dumps(bench))
        lines.append(f"{name}\t{status}\t{rc}\t10\t100\t{log_path}\t{json_path}\n")
    (tmp_path / "steps.tsv").write_text("".join(lines))
    return subprocess.run([sys.executable, "benchmarks/gpu_check_summary.py", "summary", *args,
                           str(tmp_path / "steps.tsv")], cwd=ROOT, capture_output=True, text=True, timeout=60)


def _bench(ops_: list[dict], complete: bool = True, sections=("ops",)) -> dict:
    return {"complete": complete, "cut": None, "ops": ops_, "model": None,
            "meta": {"device_name": "NVIDIA H100 80GB HBM3", "sections": list(sections), "batch": 144,
                     "backends": sorted({r["backend"] for r in ops_}),
                     "card": cards.card_for("NVIDIA H100 80GB HBM3").as_dict()}}


def _ok(level: int, dtype: str, backend: str, **times) -> dict:
    return {**op._row(level, 144, dtype, backend), "status": "ok", **times}


def test_gpu_check_summary_of_a_cut_run(tmp_path):
    ops_ = [_ok(1, "bf16", "triton", fwd_ms=0.1, fwd_speedup=12.0, fwd_tflops=230.0, fwd_flops_pct=23.2,
                fwd_gb_s=900.0, fwd_bw_pct=26.9),
            {**op._row(1, 144, "bf16", "cpu"), "status": "skipped", "reason": "inputs are on cuda"},
            {**op._row(1, 144, "bf16", "flex"), "status": "cut"}]
    proc = _summary(tmp_path, [("tests", "cut", 124, "....\n!!! KeyboardInterrupt !!!\n"
                                "===== 4 passed, 1 failed in 99.1s =====\n", None),
                               ("ops", "ok", 0, "", _bench(ops_, complete=False))])
    out = proc.stdout
    assert proc.returncode == 3, out + proc.stderr
    assert "4 passed, 1 failed in 99.1s" in out and "card H100 SXM" in out
    triton = next(line for line in out.splitlines() if line.split()[:3] == ["1", "bf16", "triton"])
    assert "12.00" in triton and "23.2" in triton and "26.9" in triton
    assert "skipped cpu (1/bf16): inputs are on cuda" in out
    assert "ops: 1 op rows (bf16 L1 flex)" in out and "tests cut" in out


def test_gpu_check_summary_contains_a_crash(tmp_path):
    """A bench process killed by a signal: its finished rows stand, the row it was running shows
    as crashed, the rest as not run, its log's last lines print; the other process's rows stand."""
    crashed = [_ok(3, "fp32", "triton", fwd_ms=0.2), {**op._row(2, 144, "fp32", "triton"), "status": "running"},
               {**op._row(1, 144, "fp32", "triton"), "status": "pending"}]
    fine = [_ok(3, "fp32", "cuda", fwd_ms=0.3), _ok(3, "fp32", "reference", fwd_ms=0.9)]
    log = "".join(f"line {i}\n" for i in range(20)) + "CUDA error: an illegal memory access was encountered\n"
    proc = _summary(tmp_path, [("ops", "crashed", 134, log, _bench(crashed, complete=False)),
                               ("ops-cuda", "ok", 0, "", _bench(fine))])
    out = proc.stdout
    assert proc.returncode == 3, out + proc.stderr
    assert "ops          crashed  134" in out and "killed by SIGABRT" in out
    rows = {tuple(line.split()[:4]) for line in out.splitlines()}
    assert {("3", "fp32", "triton", "ok"), ("2", "fp32", "triton", "crashed"), ("1", "fp32", "triton", "not"),
            ("3", "fp32", "cuda", "ok"), ("3", "fp32", "reference", "ok")} <= rows
    assert "   | CUDA error: an illegal memory access was encountered" in out and "   | line 13" in out
    assert "   | line 12" not in out  # the last 8 lines only
    assert "RESULT: not all ran: ops crashed; ops: 2 op rows (fp32 L2 triton, fp32 L1 triton)" in out


@pytest.mark.parametrize("planted", [True, False])
def test_gpu_check_summary_of_a_fault_rehearsal(tmp_path, planted):
    """--fault: exit 0 only when the named step crashed by the injected fault and all else ran."""
    line = "gpu_check_fault: backend 'triton' aborts its process (injected fault)\n" if planted else "Aborted\n"
    steps = [("ops", "crashed", 134, line, _bench([{**op._row(3, 1, "fp32", "triton"), "status": "running"}],
                                                  complete=False)),
             ("ops-cpu", "ok", 0, "", _bench([_ok(3, "fp32", "cpu", fwdbwd_ms=1.0)]))]
    proc = _summary(tmp_path, steps, "--fault", "ops=triton")
    assert proc.returncode == (0 if planted else 3), proc.stdout + proc.stderr
    assert ("RESULT: fault rehearsal passed: ops crashed where triton ran" in proc.stdout) is planted
    assert ("the injected fault did not crash ops (crashed)" in proc.stdout) is not planted


def test_gpu_check_summary_lists_autotune_winners(tmp_path):
    log = ("Triton autotuning for function _fwd_kernel,\nwith key as (784, 32, 'ieee', 'torch.float32', "
           "'torch.float32'),\nfinished after 3.25s,\nbest config selected: BM: 64, BN: 32, num_warps: 4, "
           "num_ctas: 1, num_stages: 2, maxnreg: None;\n")
    proc = _summary(tmp_path, [("ops", "ok", 0, log, _bench([_ok(1, "fp32", "triton")]))])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "  ops      _fwd_kernel      (784, 32, ieee) float32: BM: 64, BN: 32, num_warps: 4, num_stages: 2 (3.2 s)" \
        in proc.stdout
    assert "RESULT: every step passed and every planned row ran" in proc.stdout


def test_gpu_check_model_backend(tmp_path):
    """The fastest fused backend whose rows of the first dtype all ran; else the reference."""
    paths = []
    for name, rows in (("a", [_ok(1, "fp32", "triton", fwdbwd_ms=2.0), _ok(3, "fp32", "triton", fwdbwd_ms=1.0),
                              _ok(1, "bf16", "triton")]),
                       ("b", [_ok(1, "fp32", "cuda", fwdbwd_ms=2.5), {**op._row(3, 144, "fp32", "cuda"),
                                                                     "status": "error"}])):
        paths.append(str(tmp_path / f"{name}.json"))
        Path(paths[-1]).write_text(json.dumps(_bench(rows)))

    def pick(among: str, *files: str) -> list[str]:
        proc = subprocess.run([sys.executable, "benchmarks/gpu_check_summary.py", "model-backend", "--among", among,
                               *files], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.rstrip("\n").split("\t")

    assert pick("triton,cuda", *paths) == ["triton", "least op fwd+bwd time of triton 3.000 ms"]
    assert pick("cuda", *paths)[0] == "reference"  # cuda's level 3 failed
    assert pick("triton", str(tmp_path / "missing.json"))[0] == "reference"
