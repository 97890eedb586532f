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


def test_train_resume_evaluate(data, tmp_path, capsys, monkeypatch):
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

    # Resume: epoch 3 continues from last.pt with its optimizer, schedule and history; a new
    # --lr continues the schedule lr * gamma^(epoch - 1) from there.
    new_lr = [a if a != "1e-3" else "5e-4" for a in TRAIN_ARGS]
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "3", "--resume",
                 "--max-steps", "1", *new_lr]) == 0
    log = capsys.readouterr().out
    assert "resumed" in log and "resume: applying --epochs 3 (was 2); --lr 0.0005 (was 0.001) from epoch 3" in log
    resumed = metrics(out)
    assert [r["epoch"] for r in resumed] == ["1", "2", "3"] and resumed[:2] == rows
    assert float(resumed[2]["lr"]) == pytest.approx(5e-4 * 0.98 ** 2)
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

    # An output that cannot be written is named (status 3); the others are written.
    import poster_fast.training.plots as plots
    from poster_fast.files import write_file

    def no_space(path, write):  # the disk is full when the plot is written (files.write_file's OSError)
        def fail(tmp):
            raise OSError(28, "No space left on device")
        return write_file(path, fail)
    monkeypatch.setattr(plots, "write_file", no_space)
    assert main(["evaluate", "--data", str(data), "--checkpoint", str(out / "best.pt"), "--workers", "0",
                 "--image-size", "64", "--out", str(tmp_path / "eval2")]) == 3
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("poster-fast evaluate: error: 1 outputs could not be written")
    assert "confusion_valid.png" in err and "No space left" in err
    assert json.loads((tmp_path / "eval2" / "eval_valid.json").read_text())["top1"] == report["top1"]


@pytest.mark.parametrize("case, message", [
    ("no_valid", "valid is missing: expected the ImageFolder layout"),
    ("empty_class", "class folder(s) with no images"),
    ("mismatch", "class folders differ"),
    ("zero_based", "do not match the rafdb label numbering"),
    ("broken_image", "4 of the 8 image files in"),
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
    assert message in err and err.startswith("poster-fast train: error:") and err.count("\n") == 1


def test_evaluate_missing_checkpoint(data, tmp_path, capsys):
    assert main(["evaluate", "--data", str(data), "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt: does not exist" in capsys.readouterr().err


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
    counts = np.bincount([targets[draw.index] for draw in BalancedSampler(targets, seed=1)], minlength=2)
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
    assert "global batch 4 = 2 processes x 2 images (1 node)" in proc.stdout
    assert len(metrics(out)) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True
    assert summary["eval"]["samples"] == 4  # the shards cover the val set exactly once
    best = torch.load(out / "best.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in best["state_dict"])


# ----------------------------------------------------------------------------- robustness

def one_line_error(err: str, status_line: str) -> str:
    last = err.strip().splitlines()[-1]
    assert last.startswith(status_line) and "Traceback" not in err, err
    return last


def test_divergence_stops_before_anything_is_saved(data, tmp_path, capsys):
    """--lr 1e9: the first step is finite, the weights blow up, and the NaN validation loss
    stops the run before best.pt or last.pt is written."""
    out = tmp_path / "run"
    args = [a if a != "1e-3" else "1e9" for a in TRAIN_ARGS]
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "2", "--max-steps", "1", *args]) == 3
    last = one_line_error(capsys.readouterr().err, "poster-fast train: error: training stopped: the valid loss is nan")
    assert "epoch 1 was not saved" in last
    assert not (out / "best.pt").exists() and not (out / "last.pt").exists()


def test_a_non_finite_loss_stops_before_the_weights_change():
    from poster_fast.errors import NonFiniteError
    from poster_fast.training.distributed import Dist
    from poster_fast.training.steps import Optimisation, train_steps

    net = torch.nn.Linear(3, 2)
    before = net.weight.detach().clone()
    for name in ("adam", "sam-adam"):
        opt = Optimisation.create(list(net.parameters()), name, 1e-2, 0.0, 0.05, 0.98)
        x = torch.tensor([[1.0, 2.0, float("nan")]])
        with pytest.raises(NonFiniteError, match="the loss is nan at epoch 1/1, step 1"):
            list(train_steps(net, [(x, torch.tensor([0]))], range(1), 1, opt, Dist(), False,
                             torch.zeros(3, dtype=torch.float64), "epoch 1/1"))
        assert torch.equal(net.weight, before)


@pytest.fixture(scope="module")
def last_pt(tmp_path_factory):
    """A training state of 2 epochs on dark/bright with adam, as `train` writes it."""
    from poster_fast import POSTERV2
    from poster_fast.checkpoint import save_training_state
    from poster_fast.training.options import TrainOptions

    net = POSTERV2(2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.98)
    path = tmp_path_factory.mktemp("resume") / "last.pt"
    options = TrainOptions("data", "rafdb", classes=["dark", "bright"], optimizer="adam", lr=1e-3, epochs=2)
    save_training_state(path, net, opt, sched, dataset="rafdb", classes=["dark", "bright"], epoch=2,
                        best_acc=1.0, best_epoch=1, options=options.record())
    save_model = __import__("poster_fast.checkpoint").checkpoint.save_model
    save_model(path.with_name("best.pt"), net, dataset="rafdb", classes=["dark", "bright"], epoch=1, best_acc=1.0)
    return path


@pytest.mark.parametrize("change, message", [
    (["--optimizer", "sam-adam"], "is a run with --optimizer adam; --optimizer sam-adam cannot continue it"),
    (["--epochs", "2"], "has finished epoch 2 and --epochs is 2; give --epochs larger than 2"),
    (["--classes", "a,b"], "is a rafdb run with classes ['dark', 'bright'], not rafdb with ['a', 'b']"),
    (["--dataset", "caers"], "is a run with --dataset rafdb; --dataset caers cannot continue it"),
    (["--best"], "a best.pt holds the model only: resume from last.pt"),
])
def test_resume_refuses_what_cannot_continue_the_run(data, last_pt, tmp_path, change, message, capsys):
    resume = str(last_pt.with_name("best.pt") if change == ["--best"] else last_pt)
    args = ["train", "--data", str(data), "--out", str(tmp_path / "o"), "--resume", resume, "--epochs", "3",
            *TRAIN_ARGS]
    if change != ["--best"]:
        args += change
    assert main(args) == 2
    assert message in one_line_error(capsys.readouterr().err, "poster-fast train: error:")
    assert not (tmp_path / "o" / "metrics.csv").exists()


def test_resume_within_an_epoch_refuses_another_batch_size(data, last_pt, tmp_path, capsys):
    state = torch.load(last_pt, weights_only=True)
    state.update(epoch=1, step=1, samples=4, ranks=None)
    torch.save(state, tmp_path / "last.pt")
    args = ["train", "--data", str(data), "--out", str(tmp_path / "o"), "--resume", str(tmp_path / "last.pt"),
            "--epochs", "3", *TRAIN_ARGS]
    assert main(args) == 2  # the run's batch is 144
    assert "stopped within epoch 2, at step 1 of batches of 144: --batch-size can change at an epoch's end only" \
        in one_line_error(capsys.readouterr().err, "poster-fast train: error:")


def test_resume_options_keep_the_runs_values_unless_given_again():
    from poster_fast.errors import UsageError
    from poster_fast.training.options import TrainOptions, describe_changes, resume_options

    run = TrainOptions("d", "rafdb", gamma=0.9, lr=1e-4, batch_size=8, epochs=10, seed=3, workers=2).record()
    now = TrainOptions("d2", "rafdb", lr=3e-4, epochs=20, workers=0).check()
    resumed, changes = resume_options(now, run, 5, {"data", "dataset", "lr", "epochs", "workers"}, Path("x"))
    assert (resumed.gamma, resumed.batch_size, resumed.seed) == (0.9, 8, 3)  # not given: the run's
    assert (resumed.lr, resumed.epochs, resumed.workers, resumed.data) == (3e-4, 20, 0, "d2")
    assert changes == {"epochs": (10, 20), "lr": (1e-4, 3e-4)}  # run-time options are not listed
    assert describe_changes(changes) == "--epochs 20 (was 10); --lr 0.0003 (was 0.0001)"
    _, every = resume_options(now, run, 5, None, Path("x"))  # None: every option is given
    assert every["gamma"] == (0.9, 0.98) and every["batch_size"] == (8, 144)
    with pytest.raises(UsageError, match="--optimizer adam cannot continue it"):
        resume_options(TrainOptions("d", "rafdb", optimizer="adam", epochs=20), run, 5, None, Path("x"))


def test_missing_matplotlib_keeps_every_other_output_and_stale_temps_are_removed(data, tmp_path, monkeypatch,
                                                                               capsys):
    """The library's train() (the command refuses earlier without its extra): the plots that
    cannot be drawn are named in a RunError once every other output is written."""
    from poster_fast.errors import RunError
    from poster_fast.training.loop import train
    from poster_fast.training.options import TrainOptions

    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt.tmp").write_bytes(b"a killed save")
    (out / "summary.json.0badc0de.tmp").write_text("{")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    opts = TrainOptions(str(data), "rafdb", out=str(out), classes=["dark", "bright"], batch_size=4, optimizer="adam",
                        lr=1e-3, image_size=64, workers=0, device="cpu", epochs=1, max_steps=1)
    with pytest.raises(RunError, match="training finished, but 2 outputs could not be written") as info:
        train(opts)
    assert "confusion_valid.png" in str(info.value) and "curves.png" in str(info.value)
    captured = capsys.readouterr()
    assert "matplotlib is not installed" in captured.err
    assert "removed 2 temporary files a killed run left" in captured.out
    for name in ("best.pt", "last.pt", "metrics.csv", "summary.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["best_epoch"] == 1
    assert not list(out.glob("*.tmp"))


def test_corrupt_images_are_found_before_the_first_epoch(tmp_path, capsys):
    root = make_folder(tmp_path / "d", {"train": 4, "valid": 2}, folders=("1", "2"))
    bad = root / "valid" / "2" / "0.png"
    bad.write_bytes(bad.read_bytes()[:60])  # the header opens, the pixels do not
    args = ["train", "--data", str(root), "--out", str(tmp_path / "o"), "--epochs", "1", "--workers", "2",
            *(a for a in TRAIN_ARGS if a not in ("--workers", "0"))]
    assert main(args) == 2
    last = one_line_error(capsys.readouterr().err, "poster-fast train: error: 1 of the 4 image files in")
    assert str(bad) in last and "truncated" in last
    assert main([*args, "--test-split", "nope"]) == 2  # found before the images are checked
    assert "nope is missing" in one_line_error(capsys.readouterr().err, "poster-fast train: error:")


def test_worker_errors_are_one_line(tmp_path):
    from poster_fast.data.images import load_image
    from poster_fast.errors import DataError
    from poster_fast.training.steps import batches

    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.zeros(1) if i == 0 else load_image(tmp_path / "gone.png")
    with pytest.raises(DataError) as info:
        list(batches(torch.utils.data.DataLoader(Broken(), batch_size=1, num_workers=1)))
    assert str(info.value) == f"cannot read image {tmp_path / 'gone.png'}: [Errno 2] No such file or directory: " \
                              f"'{tmp_path / 'gone.png'}'"
