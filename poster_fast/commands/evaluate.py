"""`poster-fast evaluate`: top-1, per-class and mean class accuracy and the confusion matrix of a
checkpoint on DATA/<split>."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.labels import DATASETS
from ..extras import require
from .options import add_data_options, add_inference_options, add_model_options, dataset_tables


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = "Evaluate a checkpoint on DATA/<split>/<class>/*.\n" + dataset_tables()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", choices=list(DATASETS), help="default: the checkpoint's")
    p.add_argument("--split", default="valid")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", help="write eval_<split>.json and confusion_<split>.png here")
    add_data_options(p, amp=False)
    add_model_options(p)
    add_inference_options(p)


def run(args: argparse.Namespace) -> int:
    require("train")
    from ..data.datasets import ImageFolder, split_dir
    from ..data.transforms import ToNormalizedTensor
    from ..inference.classifier import load_classifier
    from ..training.distributed import Dist
    from ..training.metrics import write_json
    from ..training.plots import plot_confusion
    from ..training.steps import eval_loader, evaluate_model

    folder = ImageFolder(split_dir(args.data, args.split), ToNormalizedTensor(args.image_size))
    classifier = load_classifier(args.checkpoint, trusted=args.trusted, attn_backend=args.attn_backend,
                                 device=args.device, dataset=args.dataset, classes=args.classes,
                                 folders=folder.folders, precision=args.precision, compile=args.compile)
    print(classifier.describe(), file=sys.stderr)
    d = Dist(device=classifier.device)
    loader = eval_loader(folder, args.batch_size, args.workers, d)
    result = evaluate_model(classifier.model, loader, len(classifier.classes), d, amp=False, progress=True)
    print(f"{args.checkpoint} on {folder.root}, precision {classifier.precision.name}:\n"
          f"{result.report(classifier.classes)}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / f"eval_{args.split}.json", {**result.as_dict(classifier.classes), **classifier.run_info})
        plot_confusion(result, classifier.classes, out / f"confusion_{args.split}.png",
                       f"{args.dataset or classifier.recorded.get('dataset', '')} {args.split}")
        print(f"wrote {out}/eval_{args.split}.json, confusion_{args.split}.png")
    return 0
