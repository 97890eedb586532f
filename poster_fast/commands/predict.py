"""`poster-fast predict`: classify the facial expression of every face in photos and videos."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..checks import BATCH_SIZE, CROP_MARGIN, FRAME_STEP, IMAGE_SIZE
from ..data.labels import DATASETS
from ..errors import RunError, UsageError
from ..extras import require
from ..files import Reads, check_output_dir, check_output_file, same_file
from .options import (add_force_option, add_inference_options, add_model_options, check_batch_memory, check_checkpoint,
                      check_model_options, checkpoint_files, comma_list, dataset_tables, number)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Find faces in photos and video frames, crop them and classify their expression."
                     "\n\nClass names per dataset "
                     "(model output index: official label = name):\n" + dataset_tables() +
                     "\nThe names of the outputs: --classes, else --dataset's table, else the names the "
                     "checkpoint records, else the table of the dataset it records.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image or video files, or folders (recursive); videos (.mp4 .avi .mov .mkv .webm ...) "
                        "are read with OpenCV")
    p.add_argument("--checkpoint", help="trained POSTER V2 checkpoint (.pt/.pth)")
    p.add_argument("--dataset", choices=list(DATASETS),
                   help="label the outputs with this dataset's classes (default: the checkpoint's)")
    p.add_argument("--classes", type=comma_list,
                   help="comma-separated class names in model output order (overrides all)")
    p.add_argument("--no-detect", action="store_true", help="inputs are already face crops (e.g. RAF-DB aligned)")
    p.add_argument("--margin", type=number(CROP_MARGIN), default=0.2,
                   help="crop margin per side, fraction of the face box")
    p.add_argument("--image-size", type=number(IMAGE_SIZE), default=224,
                   help="crop size fed to the model")
    p.add_argument("--batch-size", type=number(BATCH_SIZE), default=32,
                   help="face crops per forward pass")
    p.add_argument("--every", type=number(FRAME_STEP), default=1, metavar="N",
                   help="videos: classify every N-th frame (frames 0, N, 2N, ...)")
    add_model_options(p)
    add_inference_options(p)
    p.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write JSON to FILE (or stdout)")
    p.add_argument("--csv", nargs="?", const="-", metavar="FILE", help="write CSV to FILE (or stdout)")
    p.add_argument("--annotate", metavar="DIR",
                   help="write each photo with boxes and labels to DIR/<name>.png, each video's processed "
                        "frames to DIR/<name>.mp4 (.avi where mp4 cannot be written); never over an input file, "
                        "nor over an existing file without --force (<name>_1.png, ... instead)")
    add_force_option(p, "overwrite existing --json and --csv files, and files of --annotate's names")
    p.add_argument("--allow-random", action="store_true", help="run without a checkpoint (smoke tests)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def check(args: argparse.Namespace) -> Reads:
    """Every option that cannot be used, before any work; creates the output folders. Returns
    what the command reads: the input files and the checkpoint's (no output may be one)."""
    from ..inference.predict import collect_inputs
    from ..model.memory import INFER_BYTES_PER_IMAGE, input_bytes

    if not args.checkpoint and not args.allow_random:
        raise UsageError("--checkpoint is required: an untrained model gives meaningless labels "
                         "(--allow-random runs one anyway, for smoke tests)")
    if args.checkpoint:
        check_checkpoint("--checkpoint", args.checkpoint)
    if args.json == args.csv == "-":
        raise UsageError("--json and --csv cannot both write to stdout: give one of them a FILE")
    if args.json and args.csv and args.json != "-" and same_file(args.json, args.csv):
        raise UsageError(f"--json and --csv name the same file {args.json}")
    inputs = [Path(p) for p, error in collect_inputs(args.inputs) if error is None]
    reads = Reads([*inputs, *(checkpoint_files(args.checkpoint) if args.checkpoint else [])])
    if args.annotate:
        check_output_dir("--annotate", args.annotate)
    for option, dest in (("--json", args.json), ("--csv", args.csv)):
        if dest and dest != "-":
            check_output_file(option, dest, reads, args.force)
    check_model_options(args)
    check_batch_memory("--batch-size", args.batch_size, INFER_BYTES_PER_IMAGE + input_bytes(args.image_size),
                       args.device, "a face crop")
    return reads


def run(args: argparse.Namespace) -> int:
    require("predict")
    reads = check(args)
    from ..faces import FaceDetector
    from ..inference.classifier import load_classifier, random_classifier
    from ..inference.outputs import Annotator, write_outputs
    from ..inference.predict import predict_files
    from ..inference.video import VideoResult

    model_options = {"attn_backend": args.attn_backend, "device": args.device, "dataset": args.dataset,
                     "classes": args.classes, "precision": args.precision, "compile": args.compile}
    if args.checkpoint:
        classifier = load_classifier(args.checkpoint, trusted=args.trusted, **model_options)
    else:
        print("warning: no --checkpoint: random weights, the labels mean nothing", file=sys.stderr)
        classifier = random_classifier(**model_options)
    print(classifier.describe(), file=sys.stderr)
    for dest in (args.json, args.csv):
        if dest and dest != "-":
            reads.add(dest)  # no annotated photo takes its name either
    annotator = Annotator(Path(args.annotate), reads, args.force) if args.annotate else None
    finished = False
    try:
        results = predict_files(
            args.inputs, classifier, None if args.no_detect else FaceDetector(), image_size=args.image_size,
            margin=args.margin, batch_size=args.batch_size, every=args.every, on_classified=annotator,
            progress=not args.quiet)
        finished = True
    finally:
        if annotator:
            annotator.close(keep=finished)
    failed = write_outputs(results, classifier.classes, args.checkpoint, args.json, args.csv, classifier.run_info)
    failed += annotator.failed if annotator else []
    n_faces = sum(r.classified for r in results)
    n_err = sum(r.error is not None for r in results)
    videos = [r for r in results if isinstance(r, VideoResult)]
    read = f" ({len(videos)} videos, {sum(len(v.frames) for v in videos)} frames processed)" if videos else ""
    wrote = f"; {annotator.written} annotated photos in {args.annotate}" if annotator else ""
    wrote += f", {annotator.videos_written} annotated videos" if annotator and videos else ""
    print(f"{len(results)} {'files' if videos else 'images'}{read}, {n_faces} faces classified, "
          f"{n_err} with errors{wrote}", file=sys.stderr)
    if failed:
        raise RunError(f"{len(failed)} outputs could not be written (the others were): {'; '.join(failed)}")
    return 0 if n_faces else 1
