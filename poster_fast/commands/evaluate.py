"""`poster-fast evaluate`: top-1, per-class and mean class accuracy and the confusion matrix of a
checkpoint on DATA/<split>, and the record of the run that trained it (stderr; eval_<split>.json)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..checks import BATCH_SIZE
from ..data.labels import DATASETS
from ..errors import RunError, UsageError
from ..extras import require
from ..files import check_input, check_output_dir
from .options import (add_data_options, add_inference_options, add_model_options, check_checkpoint,
                      check_model_options, dataset_tables, number)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Evaluate a checkpoint on DATA/<split>/<class>/*.\n" + dataset_tables() +
                     "\nThe class names: --classes, else --dataset's table, else the names the checkpoint "
                     "records, else the table of the dataset it records; the class folders must follow "
                     "the numbering of the dataset the names come from.")
    p.add_argument("--checkpoint", required=True, help="a best.pt of poster-fast train, or the authors' file")
    p.add_argument("--dataset", choices=list(DATASETS), help="name the classes by this dataset (default: the checkpoint's)")
    p.add_argument("--split", default="valid", help="the folder under DATA to evaluate")
    p.add_argument("--batch-size", type=number(BATCH_SIZE), default=64, help="images per forward pass")
    p.add_argument("--out", help="write eval_<split>.json (with the checkpoint's record of its training "
                                 "run) and confusion_<split>.png here")
    add_data_options(p, amp=False)
    add_model_options(p)
    add_inference_options(p)


def check(args: argparse.Namespace) -> Path | None:
    """Every option that cannot be used, before any work; returns the --out folder, created."""
    check_checkpoint("--checkpoint", args.checkpoint)
    check_input("--data", args.data, folder=True)
    if args.split in ("", ".", "..") or "/" in args.split or os.sep in args.split:
        raise UsageError(f"--split {args.split!r}: expected the name of a folder in --data")
    out = None
    if args.out:
        out = check_output_dir("--out", args.out)
        for name in (f"eval_{args.split}.json", f"confusion_{args.split}.png"):
            if (out / name).is_dir():
                raise UsageError(f"--out {out}: {name} there is a folder; evaluate writes a file of that name")
    check_model_options(args)
    return out


def run(args: argparse.Namespace) -> int:
    require("train")
    out = check(args)
    from ..data.datasets import ImageFolder, split_dir
    from ..data.transforms import ToNormalizedTensor
    from ..inference.classifier import load_classifier
    from ..training.distributed import Dist
    from ..training.metrics import write_json
    from ..training.plots import plot_confusion
    from ..training.record import describe
    from ..training.steps import eval_loader, evaluate_model

    folder = ImageFolder(split_dir(args.data, args.split), ToNormalizedTensor(args.image_size))
    folder.check_images(decode=False)
    classifier = load_classifier(args.checkpoint, trusted=args.trusted, attn_backend=args.attn_backend,
                                 device=args.device, dataset=args.dataset, classes=args.classes,
                                 folders=folder.folders, precision=args.precision, compile=args.compile)
    print(classifier.describe(), file=sys.stderr)
    run = classifier.recorded.get("run")
    print("\n".join(describe(run)), file=sys.stderr)
    d = Dist(device=classifier.device)
    loader = eval_loader(folder, args.batch_size, args.workers, d)
    result = evaluate_model(classifier.model, loader, len(classifier.classes), d, amp=False, progress=True)
    print(f"{args.checkpoint} on {folder.root}, precision {classifier.precision.name}:\n"
          f"{result.report(classifier.classes)}")
    if out is None:
        return 0
    title = f"{args.dataset or classifier.recorded.get('dataset', '')} {args.split}"
    written, failed = [], []
    report = {**result.as_dict(classifier.classes), **classifier.run_info, "run": run}
    for name, write in ((f"eval_{args.split}.json", lambda p: write_json(p, report)),
                        (f"confusion_{args.split}.png",
                         lambda p: plot_confusion(result, classifier.classes, p, title))):
        try:
            write(out / name)
            written.append(name)
        except (OSError, ImportError) as err:
            failed.append(f"{out / name} ({err})")
    if written:
        print(f"wrote {out}/{', '.join(written)}", file=sys.stderr if failed else sys.stdout)
    if failed:
        raise RunError(f"{len(failed)} outputs could not be written: {'; '.join(failed)}")
    return 0
