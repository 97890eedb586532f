"""`poster-fast train | evaluate` on a tiny synthetic ImageFolder (dark vs bright noise), SAM,
the data checks, and a 2-process gloo DistributedDataParallel run under torchrun."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from poster_fast.commands.cli import main
from poster_fast.data.sampler import BalancedSampler
from poster_fast.data.transforms import RandomErasing
from poster_fast.training.sam import SAM

TRAIN_ARGS = ["--dataset", "rafdb", "--classes", "dark,bright", "--batch-size", "4", "--optimizer", "adam",
              "--lr", "1e-3", "--image-size", "64", "--workers", "0", "--device", "cpu"]


def make_folder(root: Path, per_class: dict[str, int], folders: tuple[str, ...] = ("0", "1"),
                seed: int = 0) -> Path:
    """root/<split>/<folder>/*.png: class 0 dark noise, class 1 bright noise (learnable)."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for c, name in enumerate(folders):
            d = root / split / name
            d.mkdir(parents=True)
            lo = 0 if c == 0 else 175
            for i in range(n):
                Image.fromarray(rng.integers(lo, lo + 80, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("syn"), {"train": 4, "valid": 2})


def metrics(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "metrics.csv").open()))


def test_train_resume_evaluate(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "2", *TRAIN_ARGS]) == 0
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[1]["val_acc"]) > 0.5 and float(rows[1]["best_acc"]) > 0.5
    assert float(rows[1]["lr"]) == pytest.approx(1e-3 * 0.98)
    for name in ("best.pt", "last.pt", "curves.png", "confusion_valid.png", "summary.json"):
        assert (out / name).is_file(), name
    best = torch.load(out / "best.pt", weights_only=True)
    assert "optimizer" not in best and best["classes"] == ["dark", "bright"] and best["num_classes"] == 2
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["optimizer"]["state"] and last["scheduler"]["last_epoch"] == 2
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["eval"]["per_class"]) == {"dark", "bright"}
    capsys.readouterr()

    # Resume: epoch 3 continues from last.pt with its optimizer, schedule and history.
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "3", "--resume",
                 "--max-steps", "1", *TRAIN_ARGS]) == 0
    assert "resumed" in capsys.readouterr().out
    resumed = metrics(out)
    assert [r["epoch"] for r in resumed] == ["1", "2", "3"] and resumed[:2] == rows
    assert float(resumed[2]["lr"]) == pytest.approx(1e-3 * 0.98 ** 2)
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3

    # evaluate reproduces the accuracy logged for the best epoch.
    best = torch.load(out / "best.pt", weights_only=True)
    logged = next(r for r in resumed if int(r["epoch"]) == best["epoch"])
    assert main(["evaluate", "--data", str(data), "--checkpoint", str(out / "best.pt"), "--workers", "0",
                 "--image-size", "64", "--batch-size", "3", "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "eval_valid.json").read_text())
    assert report["top1"] == pytest.approx(float(logged["val_acc"]), abs=1e-9)
    assert report["mean_class_acc"] == pytest.approx(float(logged["val_mean_acc"]), abs=1e-9)
    assert sum(map(sum, report["confusion"])) == 4
    assert (tmp_path / "eval" / "confusion_valid.png").is_file()
    assert "mean class accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("case, message", [
    ("no_valid", "valid is missing: expected the ImageFolder layout"),
    ("empty_class", "class folder(s) with no images"),
    ("mismatch", "class folders differ"),
    ("zero_based", "do not match the rafdb label numbering"),
    ("broken_image", "cannot read image"),
])
def test_bad_data_errors(tmp_path, capsys, case, message):
    root = make_folder(tmp_path / "d", {"train": 4, "valid": 2},
                       folders=("0", "1", "2", "3", "4", "5", "6") if case == "zero_based" else ("1", "2"))
    args = ["train", "--data", str(root), "--out", str(tmp_path / "o"), "--epochs", "1",
            *(a for a in TRAIN_ARGS if a not in ("--classes", "dark,bright"))]
    if case != "zero_based":
        args += ["--classes", "a,b"]
    if case == "no_valid":
        os.rename(root / "valid", root / "val")
    elif case == "empty_class":
        for f in (root / "train" / "2").iterdir():
            f.unlink()
    elif case == "mismatch":
        os.rename(root / "valid" / "2", root / "valid" / "3")
    elif case == "broken_image":
        for f in (root / "train" / "1").iterdir():
            f.write_bytes(b"truncated")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "error:" in err


def test_evaluate_missing_checkpoint(data, tmp_path, capsys):
    assert main(["evaluate", "--data", str(data), "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt does not exist" in capsys.readouterr().err


def test_sam_step_matches_definition():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5))
    x = torch.randn(5)

    def loss_fn(p: torch.Tensor) -> torch.Tensor:
        return ((p * x).sum() - 1) ** 2 + (p ** 4).sum()

    base = torch.optim.SGD([w], lr=0.1)
    sam = SAM(base, rho=0.05)
    w0 = w.detach().clone()
    loss_fn(w).backward()
    g = w.grad.clone()
    sam.first_step()
    assert torch.allclose(w, w0 + 0.05 * g / g.norm())
    base.zero_grad()
    loss_fn(w).backward()
    g_adv = w.grad.clone()
    sam.second_step()
    assert torch.allclose(w, w0 - 0.1 * g_adv)


def test_balanced_sampler_and_erasing():
    targets = [0] * 90 + [1] * 10
    counts = np.bincount([targets[i] for i in BalancedSampler(targets, seed=1)], minlength=2)
    assert 30 < counts[1] < 70  # ~50/50 despite a 9:1 imbalance
    shards = [list(BalancedSampler(targets, 2, r, seed=1)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 50
    x = torch.ones(3, 64, 64)
    erased = RandomErasing(1.0, (0.05, 0.05))(x)
    assert 0.03 < (erased == 0).all(0).float().mean() < 0.07


def test_ddp_torchrun_gloo(data, tmp_path):
    """2 CPU processes under torchrun: rank-0-only outputs, ranks end with identical weights."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "poster_fast", "train", "--data", str(data), "--out", str(out), "--epochs", "1",
           "--max-steps", "1", *[a if a != "adam" else "sam-adam" for a in TRAIN_ARGS]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 1:") == 1  # rank 0 logs, rank 1 does not
    assert "(2 x 2)" in proc.stdout
    assert len(metrics(out)) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True
    assert summary["eval"]["samples"] == 4  # the shards cover the val set exactly once
    best = torch.load(out / "best.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in best["state_dict"])
