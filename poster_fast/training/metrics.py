"""What training and evaluation measure: top-1, per-class and mean class accuracy from a
confusion matrix, and the per-epoch metrics CSV."""
from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError
from ..files import open_regular, write_file

METRICS_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_mean_acc",
                  "best_acc", "seconds")


@dataclass
class EvalResult:
    loss: float
    confusion: torch.Tensor  # (true, predicted) counts

    @property
    def top1(self) -> float:
        return float(self.confusion.diag().sum() / self.confusion.sum())

    @property
    def per_class(self) -> list[float]:
        n = self.confusion.sum(1)
        return [float(c / t) if t else math.nan for c, t in zip(self.confusion.diag(), n)]

    @property
    def mean_acc(self) -> float:
        accs = [a for a in self.per_class if not math.isnan(a)]
        return sum(accs) / len(accs) if accs else math.nan

    def as_dict(self, classes: list[str]) -> dict[str, Any]:
        return {"top1": self.top1, "mean_class_acc": self.mean_acc, "loss": self.loss,
                "samples": int(self.confusion.sum()),
                "per_class": {c: {"acc": a, "samples": int(n)} for c, a, n in
                              zip(classes, self.per_class, self.confusion.sum(1))},
                "classes": classes, "confusion": self.confusion.tolist()}

    def report(self, classes: list[str]) -> str:
        w = max(len(c) for c in classes)
        lines = [f"top-1 {self.top1:.4f}  mean class accuracy {self.mean_acc:.4f}  "
                 f"({int(self.confusion.sum())} images)", f"{'class':<{w}}  images  accuracy"]
        lines += [f"{c:<{w}}  {int(n):>6}  {a:.4f}" for c, n, a in
                  zip(classes, self.confusion.sum(1), self.per_class)]
        lines.append("confusion (rows: true, columns: predicted)")
        lines += [f"{c:<{w}}  " + " ".join(f"{int(v):>6}" for v in row)
                  for c, row in zip(classes, self.confusion)]
        return "\n".join(lines)


def read_metrics(path: Path, upto: int) -> list[dict[str, Any]]:
    """The rows of an earlier run's metrics.csv up to epoch `upto` (a resumed run continues them)."""
    if not upto or not os.path.lexists(path):
        return []
    try:
        with io.TextIOWrapper(open_regular(path), newline="") as fh:
            return [r for r in csv.DictReader(fh) if int(r["epoch"]) <= upto]
    except (OSError, KeyError, TypeError, ValueError, csv.Error) as err:
        raise DataError(f"{path}: cannot read the resumed run's metrics ({type(err).__name__}: {err}); "
                        "move the file away to start the metrics afresh") from None


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace metrics.csv (files.write_file: OutputError if it cannot be written)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRICS_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    write_file(path, write)
