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
from ..files import Reads, check_input, check_output_dir, check_output_file
from ..training.options import EVAL_BATCH_SIZE
from .options import (add_data_options, add_force_option, add_inference_options, add_model_options, check_batch_memory,
                      check_checkpoint, check_model_options, checkpoint_files, dataset_tables, number)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Evaluate a checkpoint on DATA/<split>/<class>/*.\n" + dataset_tables() +
                     "\nThe class names: --classes, else --dataset's table, else the names the checkpoint "
                     "records, else the table of the dataset it records; the class folders must follow "
                     "the numbering of the dataset the names come from.")
    p.add_argument("--checkpoint", required=True, help="a best.pt of poster-fast train, or the authors' file")
    p.add_argument("--dataset", choices=list(DATASETS), help="name the classes by this dataset (default: the checkpoint's)")
    p.add_argument("--split", default="valid", help="the folder under DATA to evaluate")
    p.add_argument("--batch-size", type=number(BATCH_SIZE), default=EVAL_BATCH_SIZE, help="images per forward pass")
    p.add_argument("--out", help="write eval_<split>.json (with the checkpoint's record of its training "
                                 "run) and confusion_<split>.png here (a folder outside --data)")
    add_force_option(p, "overwrite the files of those names already in --out")
    add_data_options(p, amp=False)
    add_model_options(p)
    add_inference_options(p)


def check(args: argparse.Namespace) -> Path | None:
    """Every option that cannot be used, before any work; returns the --out folder, created."""
    from ..training.evaluation import output_names

    from ..model.memory import INFER_BYTES_PER_IMAGE, input_bytes

    check_checkpoint("--checkpoint", args.checkpoint)
    check_input("--data", args.data, folder=True)
    if args.split in ("", ".", "..") or "/" in args.split or os.sep in args.split:
        raise UsageError(f"--split {args.split!r}: expected the name of a folder in --data")
    out = None
    if args.out:
        reads = Reads(checkpoint_files(args.checkpoint), data_folders=[args.data])
        out = check_output_dir("--out", args.out, reads)
        for name in output_names(args.split):
            check_output_file("--out", out / name, reads, args.force)
    check_model_options(args)
    check_batch_memory("--batch-size", args.batch_size, INFER_BYTES_PER_IMAGE + input_bytes(args.image_size),
                       args.device, "an image")
    return out


def run(args: argparse.Namespace) -> int:
    require("train")
    out = check(args)
    from ..training.evaluation import evaluate_checkpoint

    evaluation = evaluate_checkpoint(
        args.checkpoint, args.data, args.split, batch_size=args.batch_size, workers=args.workers,
        image_size=args.image_size, trusted=args.trusted, attn_backend=args.attn_backend, device=args.device,
        dataset=args.dataset, classes=args.classes, precision=args.precision, compile=args.compile,
        log=lambda line: print(line, file=sys.stderr))
    print(evaluation.report())
    if out is None:
        return 0
    written, failed = evaluation.write(out)
    if written:
        print(f"wrote {out}/{', '.join(written)}", file=sys.stderr if failed else sys.stdout)
    if failed:
        raise RunError(f"{len(failed)} outputs could not be written: {'; '.join(failed)}")
    return 0
