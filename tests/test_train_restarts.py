"""Training that survives its processes: a run stopped (SIGTERM, exit 75) or killed (SIGKILL) at
any point and continued with `--resume auto` ends with the weights and optimiser state of the
uninterrupted run, bit for bit; under torchrun with --max-restarts 1 when one worker is killed;
and two "nodes" (torchrun --nnodes 2, c10d rendezvous on 127.0.0.1) train as one node's two
processes do. POSTERV2 on a few 32x32 images, 2 steps per epoch (slow on a shared CPU)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_train import make_folder

REQUEUE_EXIT = 75
ARGS = ["--dataset", "rafdb", "--classes", "dark,bright", "--optimizer", "adam", "--lr", "1e-3",
        "--image-size", "32", "--device", "cpu", "--resume", "auto"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TIMEOUT = 900  # seconds for one run on a loaded 2-core machine


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("syn"), {"train": 2, "valid": 1})  # 4 train images


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("syn"), {"train": 4, "valid": 1})  # 8 train images


def train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "poster_fast", "train", "--data", str(data), "--out", str(out), *ARGS, *extra]


def torchrun(*launch: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launch]


def finished(cmd: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=ENV)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


def wait_for_save(proc: subprocess.Popen, last: Path, before: int) -> None:
    """Until `last` is written again after `before` (its mtime then); fails if `proc` ends first."""
    deadline = time.monotonic() + TIMEOUT
    while mtime(last) == before:
        assert proc.poll() is None, f"the run ended (status {proc.returncode}) before saving {last}"
        assert time.monotonic() < deadline, f"no {last} after {TIMEOUT} s"
        time.sleep(0.05)


def assert_same_state(a: Path, b: Path) -> None:
    """The weights, buffers and optimiser state of two last.pt files are bitwise equal."""
    x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert (x["epoch"], x.get("step", 0)) == (y["epoch"], y.get("step", 0))
    assert x["state_dict"].keys() == y["state_dict"].keys()
    differ = [k for k in x["state_dict"] if not torch.equal(x["state_dict"][k], y["state_dict"][k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
    sx, sy = x["optimizer"]["state"], y["optimizer"]["state"]
    assert sx.keys() == sy.keys()
    assert all(torch.equal(sx[i][k], sy[i][k]) for i in sx for k in sx[i])
    assert x["scheduler"] == y["scheduler"]


def test_stopped_and_killed_runs_resume_bitwise(data, tmp_path):
    """SIGTERM at epoch 1: last.pt at the next step boundary, exit 75; continued with another
    number of loader workers and SIGKILLed after its next save; continued again to the end."""
    common = ["--epochs", "2", "--batch-size", "2", "--save-every", "1"]
    reference = tmp_path / "reference"
    first = finished(train_cmd(data, reference, *common, "--workers", "0"))
    assert f"--resume auto: no {reference / 'last.pt'}: starting a new run" in first.stdout

    out = tmp_path / "run"
    last = out / "last.pt"
    proc = subprocess.Popen(train_cmd(data, out, *common, "--workers", "0"), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_save(proc, last, 0)  # epoch 1, step 1
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == REQUEUE_EXIT, stderr[-3000:]
    assert "stopped on SIGTERM at epoch" in stderr.strip().splitlines()[-1] and "Traceback" not in stderr
    stopped = torch.load(last, weights_only=True)
    assert stopped["epoch"] == 0 and stopped["step"] in (1, 2) and len(stopped["ranks"]) == 1

    saved = mtime(last)
    proc = subprocess.Popen(train_cmd(data, out, *common, "--workers", "1"), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_save(proc, last, saved)  # the end of epoch 1, or epoch 2's first step
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    resumed = finished(train_cmd(data, out, *common, "--workers", "0"))
    assert "resumed" in resumed.stdout
    assert_same_state(reference / "last.pt", last)
    record = json.loads((out / "summary.json").read_text())["run"]
    assert [r["from"] for r in record["resumes"]] == [str(last.resolve())] * 2
    assert record["resumes"][0]["step"] == stopped["step"] and record["resumes"][0]["after_epoch"] == 0
    assert record["launch"]["world_size"] == 1 and record["launch"]["nodes"] == 1


def ddp_args(data: Path, out: Path) -> list[str]:
    """2 processes x 2 accumulated micro-batches of 1 image = global batch 4, SyncBatchNorm, SAM."""
    return ["-m", "poster_fast", "train", "--data", str(data), "--out", str(out), *ARGS, "--workers", "0",
            "--epochs", "1", "--batch-size", "4", "--accum-steps", "2", "--sync-bn", "--save-every", "1",
            "--optimizer", "sam-adam"]


@pytest.fixture(scope="module")
def ddp_reference(ddp_data, tmp_path_factory):
    """The uninterrupted run of two processes on one node."""
    out = tmp_path_factory.mktemp("ddp") / "reference"
    proc = finished(torchrun("--standalone", "--nproc-per-node", "2", *ddp_args(ddp_data, out)))
    assert "global batch 4 = 2 processes x 2 accumulation steps x 1 images (1 node)" in proc.stdout
    assert "--sync-bn: " in proc.stdout
    return out


def workers_of(launcher: subprocess.Popen) -> list[int]:
    """The training processes torchrun started (its children running poster_fast)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (entry / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            if ppid == launcher.pid and b"poster_fast" in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's workers in /proc")
def test_torchrun_restarts_a_killed_worker_bitwise(ddp_data, ddp_reference, tmp_path):
    out = tmp_path / "run"
    launcher = subprocess.Popen(
        torchrun("--standalone", "--nproc-per-node", "2", "--max-restarts", "1", "--monitor-interval", "0.5",
                 *ddp_args(ddp_data, out)), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_save(launcher, out / "last.pt", 0)  # step 1 of 2
    workers = workers_of(launcher)
    assert len(workers) == 2, workers
    os.kill(max(workers), signal.SIGKILL)
    stdout, stderr = launcher.communicate(timeout=TIMEOUT)
    assert launcher.returncode == 0, stdout[-2000:] + stderr[-4000:]
    assert "resumed" in stdout and "torchrun restart 1" in stdout
    assert_same_state(ddp_reference / "last.pt", out / "last.pt")
    record = json.loads((out / "summary.json").read_text())["run"]
    assert record["launch"]["restart"] == 1 and record["launch"]["world_size"] == 2
    assert record["resumes"][-1]["restart"] == 1 and record["resumes"][-1]["step"] == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_train_as_one_node_two_processes(ddp_data, ddp_reference, tmp_path):
    out, port = tmp_path / "run", free_port()
    nodes = [subprocess.Popen(
        torchrun("--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                 "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "poster_fast_test", *ddp_args(ddp_data, out)),
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    results = [node.communicate(timeout=TIMEOUT) for node in nodes]
    for node, (stdout, stderr) in zip(nodes, results):
        assert node.returncode == 0, stdout[-2000:] + stderr[-4000:]
    assert any("(2 nodes)" in stdout for stdout, _ in results)
    assert_same_state(ddp_reference / "last.pt", out / "last.pt")
    launch = json.loads((out / "summary.json").read_text())["run"]["launch"]
    assert (launch["world_size"], launch["nodes"], launch["accum_steps"], launch["sync_bn"]) == (2, 2, 2, True)
