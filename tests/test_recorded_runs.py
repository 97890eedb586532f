"""Recorded runs: `poster-fast train` writes the record of its run (options, seed, versions,
device, data summary, resumes) into last.pt, best.pt and summary.json; `evaluate` prints it and
writes it into eval_<split>.json; files without a record still load."""
from __future__ import annotations

import importlib.metadata
import json
import platform
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import poster_fast
from poster_fast import POSTERV2
from poster_fast.checkpoint import check_record
from poster_fast.checkpoint import describe_record as describe
from poster_fast.commands.cli import main
from poster_fast.device import hardware, native_bf16
from poster_fast.errors import CheckpointError
from poster_fast.training.record import software_versions
from test_train import TRAIN_ARGS, make_folder

ARGS = [a if a != "1e-3" else "0.0007" for a in TRAIN_ARGS] + ["--seed", "5", "--max-steps", "1"]
# --amp auto resolves by the CPU's bf16 features (device.native_bf16): what the record must say here.
AMP_HERE = "bf16" if native_bf16(hardware("cpu"))[0] else "off"


def records(out: Path) -> dict[str, dict]:
    """The record in each of the run's outputs."""
    return {"last.pt": torch.load(out / "last.pt", weights_only=True)["run"],
            "best.pt": torch.load(out / "best.pt", weights_only=True)["run"],
            "summary.json": json.loads((out / "summary.json").read_text())["run"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """train: 4 dark, 3 bright; valid: 2 and 2."""
    root = make_folder(tmp_path_factory.mktemp("syn"), {"train": 4, "valid": 2})
    (root / "train" / "1" / "3.png").unlink()
    return root


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """A 1-epoch run, and its records before it was resumed for a second epoch with a new --lr."""
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "1", *ARGS]) == 0
    first = records(out)
    resumed = [a if a != "0.0007" else "0.0005" for a in ARGS]
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "2", "--resume", *resumed]) == 0
    return out, first


def test_a_run_records_its_options_seed_versions_and_data(data, run):
    out, first = run
    for name, record in first.items():
        check_record(record)
        o = record["options"]
        assert (o["lr"], o["seed"], o["batch_size"], o["epochs"], o["optimizer"], o["image_size"]) == \
            (0.0007, 5, 4, 1, "adam", 64), name
        assert (o["dataset"], o["classes"], o["val_split"], o["sampler"], o["amp"], o["rho"], o["gamma"],
                o["weight_decay"], o["attn_backend"], o["max_steps"]) == \
            ("rafdb", ["dark", "bright"], "valid", "auto", "auto", 0.05, 0.98, 1e-4, "auto", 1), name
        assert record["seed"] == 5 and record["resumes"] == []
        assert record["resolved"] == {"amp": AMP_HERE, "sampler": "shuffle", "batch_per_process": 4}
        started = record["launch"].pop("started")
        assert record["launch"] == {"world_size": 1, "nodes": 1, "accum_steps": 1, "batch_per_process": 4,
                                    "global_batch": 4, "sync_bn": False, "restart": None}, name
        record["launch"]["started"] = started
        assert record["versions"] == {
            "python": platform.python_version(), "torch": torch.__version__, "poster_fast": poster_fast.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "triton": record["versions"]["triton"]}
        assert record["device"]["device"] == "cpu" and record["device"]["world_size"] == 1
        assert record["device"]["name"]
        assert record["data"] == {
            "root": str(data.resolve()), "dataset": "rafdb", "classes": ["dark", "bright"],
            "class_folders": ["0", "1"],
            "splits": {"train": {"images": 7, "per_class": {"dark": 4, "bright": 3}},
                       "valid": {"images": 4, "per_class": {"dark": 2, "bright": 2}}}}
        json.dumps(record, allow_nan=False)
    assert first["last.pt"] == first["best.pt"] == first["summary.json"]


def test_a_resumed_run_records_the_resume_and_the_options_it_applied(run):
    out, first = run
    resumed = records(out)
    record = resumed["last.pt"]
    assert record == resumed["summary.json"]
    assert record["options"]["lr"] == 0.0005 and record["options"]["epochs"] == 2 and record["seed"] == 5
    at = [r.pop("at") for r in record["resumes"]]
    assert record["resumes"] == [{"from": str((out / "last.pt").resolve()), "after_epoch": 1, "step": 0,
                                  "restart": None, "world_size": 1,
                                  "changes": {"epochs": [1, 2], "lr": [0.0007, 0.0005]}}]
    assert at[0] >= record["launch"]["started"] >= first["last.pt"]["launch"]["started"]  # ISO 8601, UTC
    assert record["launch"] == {**first["last.pt"]["launch"], "started": record["launch"]["started"]}
    assert record["data"] == first["last.pt"]["data"] and record["versions"] == first["last.pt"]["versions"]
    best = torch.load(out / "best.pt", weights_only=True)
    assert resumed["best.pt"] == (record if best["epoch"] == 2 else first["best.pt"])
    # The options --resume compares with are still in last.pt.
    assert torch.load(out / "last.pt", weights_only=True)["options"]["lr"] == 0.0005


def test_evaluate_prints_the_record_and_writes_it(data, run, tmp_path, capsys):
    out, _ = run
    capsys.readouterr()
    assert main(["evaluate", "--data", str(data), "--checkpoint", str(out / "best.pt"), "--workers", "0",
                 "--image-size", "64", "--device", "cpu", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    record = torch.load(out / "best.pt", weights_only=True)["run"]
    lr = record["options"]["lr"]
    assert f"run options: rafdb, adam lr {lr} weight decay 0.0001 rho 0.05 gamma 0.98, batch 4" in err
    assert f"sampler auto (shuffle), amp auto ({AMP_HERE}), attn backend auto, seed 5" in err
    assert f"poster_fast {poster_fast.__version__}, torch {torch.__version__}, Python " in err
    assert f"CUDA {torch.version.cuda or 'none'}" in err and "world size 1" in err
    assert "run launch: world size 1 on 1 node(s), global batch 4 = 1 processes x 1 accumulation steps x 4 " \
           "images, SyncBatchNorm off, started 20" in err
    for r in record["resumes"]:  # best.pt is the first session's or the resumed one's
        assert f"run resumed from {r['from']} after epoch 1 at {r['at']}: --epochs 2 (was 1)" in err
    assert f"run data: {data.resolve()}: train 7 (dark 4, bright 3); valid 4 (dark 2, bright 2)" in err
    assert json.loads((tmp_path / "eval_valid.json").read_text())["run"] == record


def test_a_checkpoint_without_a_record_loads_and_evaluates(data, run, tmp_path, capsys):
    out, _ = run
    old = torch.load(out / "best.pt", weights_only=True)
    del old["run"]  # as files written before runs were recorded
    torch.save(old, tmp_path / "old.pt")
    torch.save({"state_dict": old["state_dict"]}, tmp_path / "bare.pt")  # as the authors' files
    for name in ("old.pt", "bare.pt"):
        model, meta = POSTERV2.load_trained(tmp_path / name)
        assert "run" not in meta and model.num_classes == 2
        capsys.readouterr()
        assert main(["evaluate", "--data", str(data), "--checkpoint", str(tmp_path / name), "--workers", "0",
                     "--image-size", "64", "--device", "cpu", "--classes", "dark,bright",
                     "--out", str(tmp_path / name[:-3])]) == 0
        err = capsys.readouterr().err
        assert [line for line in err.splitlines() if line.startswith("run")] == describe(None)
        assert "records no training run" in describe(None)[0]
        assert json.loads((tmp_path / name[:-3] / "eval_valid.json").read_text())["run"] is None


@pytest.mark.parametrize("record, message", [
    ("lr 0.1", "expected a dict, found str"),
    ({"format": 1}, "the entry 'options' is missing"),
    ("seed", "the entry 'seed' should be int, found str"),
    ("resumes", "the entry 'resumes' should hold resumes"),
])
def test_a_malformed_record_is_a_checkpoint_error_naming_the_file(data, run, tmp_path, capsys, record, message):
    out, _ = run
    obj = torch.load(out / "best.pt", weights_only=True)
    if record == "seed":
        obj["run"]["seed"] = "5"
    elif record == "resumes":
        obj["run"]["resumes"] = [{"from": "x", "after_epoch": 1, "changes": {"lr": 0.1}}]
    else:
        obj["run"] = record
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt: entry 'run' is not the record of a training run: ") as err:
        POSTERV2.load_trained(tmp_path / "bad.pt")
    assert message in str(err.value)
    assert main(["evaluate", "--data", str(data), "--checkpoint", str(tmp_path / "bad.pt"), "--device", "cpu"]) == 2
    assert message in capsys.readouterr().err


def test_exported_files_carry_the_record(run, tmp_path):
    out, _ = run
    _, meta = POSTERV2.load_trained(out / "best.pt")
    assert main(["export", str(out / "best.pt"), "--safetensors", str(tmp_path / "m.safetensors"),
                 "--pretrained", str(tmp_path / "pretrained")]) == 0
    for exported in (tmp_path / "m.safetensors", tmp_path / "pretrained"):
        _, config = POSTERV2.load_trained(exported)
        assert config["run"] == meta["run"] and config["epoch"] == meta["epoch"], exported
    POSTERV2.from_pretrained(tmp_path / "pretrained").save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["run"] == meta["run"]


def test_versions_come_from_the_build_and_triton_is_not_imported():
    def build(cuda, cudnn):
        return SimpleNamespace(__version__="2.9.0+cu128", version=SimpleNamespace(cuda=cuda),
                               backends=SimpleNamespace(cudnn=SimpleNamespace(
                                   is_available=lambda: cudnn is not None, version=lambda: cudnn)))

    def no_package(name):
        raise importlib.metadata.PackageNotFoundError(name)

    gpu = software_versions(build("12.8", 91002), find_spec=lambda name: object(),
                            package_version=lambda name: {"triton": "3.5.0"}[name])
    assert (gpu["torch"], gpu["cuda"], gpu["cudnn"], gpu["triton"]) == ("2.9.0+cu128", "12.8", 91002, "3.5.0")
    cpu = software_versions(build(None, None), find_spec=lambda name: None, package_version=no_package)
    assert (cpu["cuda"], cpu["cudnn"], cpu["triton"]) == (None, None, None)
    assert cpu["python"] == platform.python_version() and cpu["poster_fast"] == poster_fast.__version__
    odd = software_versions(build(None, None), find_spec=lambda name: object(), package_version=no_package)
    assert odd["triton"] == "unknown"
