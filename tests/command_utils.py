"""Helpers of the command-line tests: the entry points of each command's work (replaced by a
recorder, so that a test sees whether the work started), a working folder, a command runner,
photos and a classifier without a model."""
from __future__ import annotations

import gc
import importlib
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from poster_fast.commands import cli
from poster_fast.device import Precision
from poster_fast.inference.classifier import Classifier
from poster_fast.inference.recognizer import Recognizer

WORK = {  # command -> the functions where its work starts
    "predict": ["poster_fast.inference.classifier.load_classifier",
                "poster_fast.inference.classifier.random_classifier",
                "poster_fast.inference.predict.predict_files"],
    "train": ["poster_fast.training.loop.train"],
    "evaluate": ["poster_fast.training.evaluation.evaluate_checkpoint"],
    "bench": ["poster_fast.benchmarking.runner.run"],
    "budget": ["poster_fast.budget.budget"],
    "export": ["poster_fast.model.posterv2.POSTERV2.load_trained"],
}


def _owner(target: str) -> tuple[object, str]:
    """The module (or class) holding the last name of the dotted `target`, and that name."""
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:-1]:
            owner = getattr(owner, name)
        return owner, parts[-1]
    raise ImportError(target)


@pytest.fixture
def work(monkeypatch):
    """Replaces every command's work by a recorder: the list of the functions called."""
    called: list[str] = []
    # Every module is imported before any is patched: a module that binds a patched name at its
    # import would keep the recorder after the test.
    owners = {target: _owner(target) for targets in WORK.values() for target in targets}
    for target, (owner, name) in owners.items():
        def record(*args, _name=target, **kwargs):
            called.append(_name)
            raise SystemExit(0)  # the work would start here
        monkeypatch.setattr(owner, name, record)
    return called


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A working folder with a photo, a checkpoint-named file, a plain file and a data root."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "me.png").write_bytes(b"png")
    (tmp_path / "c.pt").write_bytes(b"pt")
    (tmp_path / "file.txt").write_text("a file")
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "valid" / "1").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "data" / "valid" / "1" / "a.png")
    (tmp_path / "folder").mkdir()
    return tmp_path


def run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    return code, err


BASE = {
    "predict": ["predict", "photos", "--checkpoint", "c.pt"],
    "train": ["train", "--data", "data", "--dataset", "rafdb", "--out", "out"],
    "evaluate": ["evaluate", "--data", "data", "--checkpoint", "c.pt"],
    "bench": ["bench", "--quick"],
    "export": ["export", "c.pt", "--safetensors", "out.safetensors"],
    "budget": ["budget"],
}
def random_rafdb_checkpoint(path: Path) -> Path:
    """A checkpoint as `poster-fast train` writes it: POSTERV2(7) with seeded random weights and
    RAF-DB's class names."""
    from poster_fast import POSTERV2
    from poster_fast.data.labels import DATASETS

    torch.manual_seed(0)
    torch.save({"state_dict": POSTERV2(7).state_dict(), "num_classes": 7, "dataset": "rafdb",
                "classes": list(DATASETS["rafdb"].classes), "epoch": 1, "best_acc": 0.0}, path)
    return path


def photo(path: Path, seed: int, size=(40, 30)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


class FakeClassifier(Classifier):
    """Probabilities without a model: NaN for the crops `nan` marks, uniform otherwise; at each
    batch it records how many decoded photos are still alive."""

    def __init__(self, nan=lambda i: False, alive: list[weakref.ref] | None = None) -> None:
        super().__init__(torch.nn.Identity(), ["x", "y"], torch.device("cpu"), Precision("fp32", "test"), False)
        self.nan, self.alive, self.seen, self.alive_at_batch = nan, alive, 0, []

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        gc.collect()
        self.alive_at_batch.append(sum(r() is not None for r in self.alive or []))
        probs = torch.full((len(batch), 2), 0.5)
        for i in range(len(batch)):
            if self.nan(self.seen + i):
                probs[i] = float("nan")
        self.seen += len(batch)
        return probs


def recognizer(classifier: Classifier, detector=None, *, image_size: int = 224, margin: float = 0.2,
               batch_size: int = 32, align: bool = True) -> Recognizer:
    """A Recognizer of `classifier`, no detector by default (each photo is one face)."""
    return Recognizer(classifier, detector, align=align, margin=margin, image_size=image_size, batch_size=batch_size)
