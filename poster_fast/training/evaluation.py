"""A trained model's accuracy on a labelled split (`poster-fast evaluate`): top-1, per-class and
mean class accuracy and the confusion matrix of a checkpoint on DATA/<split>, run as predict
runs it (inference.classifier), with what the checkpoint records of its training run."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..checkpoint import RUN, describe_record
from ..data.datasets import ImageFolder, split_dir
from ..data.transforms import ToNormalizedTensor
from ..errors import OutputError
from ..files import write_json
from ..inference.classifier import Classifier, load_classifier
from . import plots
from .distributed import Dist
from .metrics import EvalResult
from .options import EVAL_BATCH_SIZE, TrainOptions
from .steps import eval_loader, evaluate_model

def output_names(split: str) -> tuple[str, str]:
    """The files an evaluation of `split` writes: its JSON report and its confusion matrix."""
    return f"eval_{split}.json", f"confusion_{split}.png"


@dataclass
class Evaluation:
    """A checkpoint's result on one split, with the model as it ran."""

    checkpoint: str
    split: str
    folder: ImageFolder
    classifier: Classifier
    result: EvalResult
    dataset: str | None  # the dataset the classes were named by (the plot's title)

    def report(self) -> str:
        """The result as a table for stdout: top-1, per-class accuracy and the confusion matrix."""
        return (f"{self.checkpoint} on {self.folder.root}, precision {self.classifier.precision.name}:\n"
                f"{self.result.report(self.classifier.classes)}")

    def as_dict(self) -> dict[str, Any]:
        """The JSON report: the result, how the model ran and the record of its training run."""
        return {**self.result.as_dict(self.classifier.classes), **self.classifier.run_info,
                RUN: self.classifier.recorded.get(RUN)}

    def write(self, out: Path) -> tuple[list[str], list[str]]:
        """Write `output_names(split)` into the folder `out`; one that cannot be written
        (OutputError, or no matplotlib for the plot) does not stop the other.

        Returns:
            (the names written, "PATH (why)" for each that failed).
        """
        report, plot = output_names(self.split)
        title = f"{self.dataset or self.classifier.recorded.get('dataset', '')} {self.split}"
        written, failed = [], []
        for name, write in ((report, lambda p: write_json(p, self.as_dict())),
                            (plot, lambda p: plots.plot_confusion(self.result, self.classifier.classes, p, title))):
            try:
                write(out / name)
                written.append(name)
            except OutputError as err:
                failed.append(f"{out / name} ({err.reason})")
            except ImportError as err:
                failed.append(f"{out / name} ({err})")
        return written, failed


def evaluate_checkpoint(checkpoint: str | os.PathLike, data: str | os.PathLike, split: str = "valid", *,
                        batch_size: int = EVAL_BATCH_SIZE, workers: int = TrainOptions.workers,
                        image_size: int = TrainOptions.image_size, trusted: bool = False,
                        attn_backend: str = "auto", device: str | None = None, dataset: str | None = None,
                        classes: Sequence[str] | None = None, precision: str = "auto", compile: bool = False,
                        progress: bool = True, log: Callable[[str], None] | None = None) -> Evaluation:
    """Evaluate the model in `checkpoint` on DATA/`split`/<class>/*.

    Every image file of the split is opened before the model loads. The model runs as predict
    runs it (inference.classifier.load_classifier: `precision`, `compile`, `device`,
    `attn_backend`), its outputs named by `classes`, else `dataset`'s table, else the names the
    checkpoint records, else the table of the dataset it records.

    Args:
        checkpoint: a best.pt of `poster-fast train`, an exported model or the authors' file.
        data: the dataset root; split: the folder under it.
        batch_size, workers, image_size: images per forward pass, data loader processes, the
            size images are resized to.
        trusted: allow files that pickle Python objects besides tensors.
        progress: show a progress bar on stderr.
        log: called with each line describing the loaded model and the checkpoint's run record,
            before the evaluation starts.

    Returns:
        The Evaluation (`report()`, `as_dict()`, `write(folder)`).

    Raises:
        DataError, CheckpointError: the split or the checkpoint cannot be used.
    """
    folder = ImageFolder(split_dir(data, split), ToNormalizedTensor(image_size))
    folder.check_images(decode=False)
    classifier = load_classifier(checkpoint, trusted=trusted, attn_backend=attn_backend, device=device,
                                 dataset=dataset, classes=classes, folders=folder.folders, precision=precision,
                                 compile=compile)
    for line in (classifier.describe(), *describe_record(classifier.recorded.get(RUN))):
        if log is not None:
            log(line)
    d = Dist(device=classifier.device)
    loader = eval_loader(folder, batch_size, workers, d)
    result = evaluate_model(classifier.model, loader, len(classifier.classes), d, amp=False, progress=progress)
    return Evaluation(str(checkpoint), split, folder, classifier, result, dataset)
