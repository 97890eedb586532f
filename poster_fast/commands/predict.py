"""`poster-fast predict`: classify the facial expression of every face in photos."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.labels import DATASETS
from ..errors import UsageError
from ..extras import require
from .options import add_inference_options, add_model_options, comma_list, dataset_tables


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = ("Find faces, crop them and classify their expression.\n\nClass names per dataset "
                     "(model output index: official label = name):\n" + dataset_tables() +
                     "\nExit status: 0 if any face was classified, 1 if none, 2 on a usage error.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (recursive)")
    p.add_argument("--checkpoint", help="trained POSTER V2 checkpoint (.pt/.pth)")
    p.add_argument("--dataset", choices=list(DATASETS),
                   help="label the outputs with this dataset's classes (default: the checkpoint's)")
    p.add_argument("--classes", type=comma_list,
                   help="comma-separated class names in model output order (overrides all)")
    p.add_argument("--no-detect", action="store_true", help="inputs are already face crops (e.g. RAF-DB aligned)")
    p.add_argument("--margin", type=float, default=0.2, help="crop margin per side, fraction of the face box")
    p.add_argument("--image-size", type=int, default=224, help="crop size fed to the model")
    p.add_argument("--batch-size", type=int, default=32)
    add_model_options(p)
    add_inference_options(p)
    p.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write JSON to FILE (or stdout)")
    p.add_argument("--csv", nargs="?", const="-", metavar="FILE", help="write CSV to FILE (or stdout)")
    p.add_argument("--annotate", metavar="DIR", help="write each photo with boxes and labels to DIR")
    p.add_argument("--allow-random", action="store_true", help="run without a checkpoint (smoke tests)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def validate(args: argparse.Namespace) -> None:
    """Every option that cannot be used, before any work."""
    if not args.checkpoint and not args.allow_random:
        raise UsageError("--checkpoint is required: an untrained model gives meaningless labels "
                         "(--allow-random runs one anyway, for smoke tests)")


def run(args: argparse.Namespace) -> int:
    require("predict")
    from ..faces import FaceDetector
    from ..inference.classifier import load_classifier, random_classifier
    from ..inference.outputs import Annotator, write_outputs
    from ..inference.photos import predict_photos

    validate(args)
    model_options = {"attn_backend": args.attn_backend, "device": args.device, "dataset": args.dataset,
                     "classes": args.classes, "precision": args.precision, "compile": args.compile}
    if args.checkpoint:
        classifier = load_classifier(args.checkpoint, trusted=args.trusted, **model_options)
    else:
        print("warning: no --checkpoint: random weights, the labels mean nothing", file=sys.stderr)
        classifier = random_classifier(**model_options)
    print(classifier.describe(), file=sys.stderr)
    results = predict_photos(
        args.inputs, classifier, None if args.no_detect else FaceDetector(), image_size=args.image_size,
        margin=args.margin, batch_size=args.batch_size,
        on_classified=Annotator(Path(args.annotate)) if args.annotate else None, progress=not args.quiet)
    write_outputs(results, classifier.classes, args.checkpoint, args.json, args.csv, classifier.run_info)
    n_faces = sum(len(r.faces) for r in results)
    n_err = sum(r.error is not None for r in results)
    print(f"{len(results)} images, {n_faces} faces classified, {n_err} with errors", file=sys.stderr)
    return 0 if n_faces else 1
