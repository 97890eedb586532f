"""`poster-fast predict`: classify the facial expression of every face in photos and videos."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..checks import (BATCH_SIZE, CAMERA_INDEX, CROP_MARGIN, DETECT_THRESHOLD, DURATION, FRAME_COUNT, FRAME_STEP,
                      IMAGE_SIZE, MIN_FACE)
from ..data.labels import DATASETS
from ..errors import RunError, UsageError
from ..extras import require
from ..files import check_output_dir, check_output_file
from .options import (add_inference_options, add_model_options, check_checkpoint, check_model_options, comma_list,
                      dataset_tables, number)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Find faces in photos and video frames, crop them and classify their expression."
                     "\n\nClass names per dataset "
                     "(model output index: official label = name):\n" + dataset_tables() +
                     "\nThe names of the outputs: --classes, else --dataset's table, else the names the "
                     "checkpoint records, else the table of the dataset it records.")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="image or video files, folders (recursive), or stream URLs (rtsp://, http://, ...: "
                        "whatever OpenCV's VideoCapture opens); videos (.mp4 .avi .mov .mkv .webm ...) are read "
                        "with OpenCV")
    p.add_argument("--camera", type=number(CAMERA_INDEX), metavar="INDEX",
                   help="also read camera INDEX (OpenCV's numbering, 0 first) until --max-frames, --duration "
                        "or Ctrl-C")
    p.add_argument("--checkpoint", help="trained POSTER V2 checkpoint (.pt/.pth)")
    p.add_argument("--dataset", choices=list(DATASETS),
                   help="label the outputs with this dataset's classes (default: the checkpoint's)")
    p.add_argument("--classes", type=comma_list,
                   help="comma-separated class names in model output order (overrides all)")
    p.add_argument("--no-detect", action="store_true", help="inputs are already face crops (e.g. RAF-DB aligned)")
    p.add_argument("--detect-threshold", type=number(DETECT_THRESHOLD), default=0.7, metavar="T",
                   help="the lowest face detector score kept (YuNet's scores run from 0 to 1)")
    p.add_argument("--min-face", type=number(MIN_FACE), default=16, metavar="PX",
                   help="faces smaller than PX pixels (the box's larger side) are not reported; a larger "
                        "value also makes detection faster")
    p.add_argument("--no-align", action="store_true",
                   help="crop the axis-aligned square around each face box instead of aligning the face by "
                        "its eyes, nose and mouth")
    p.add_argument("--margin", type=number(CROP_MARGIN), default=0.2,
                   help="crop margin per side, fraction of the face size")
    p.add_argument("--image-size", type=number(IMAGE_SIZE), default=224,
                   help="crop size fed to the model")
    p.add_argument("--batch-size", type=number(BATCH_SIZE), default=32,
                   help="face crops per forward pass")
    p.add_argument("--every", type=number(FRAME_STEP), default=1, metavar="N",
                   help="videos: classify every N-th frame (frames 0, N, 2N, ...); cameras and streams: "
                        "frames at least N apart")
    p.add_argument("--max-frames", type=number(FRAME_COUNT), metavar="N",
                   help="videos, cameras and streams: stop each after N processed frames")
    p.add_argument("--duration", type=number(DURATION), metavar="SECONDS",
                   help="videos, cameras and streams: stop each after SECONDS (a file's own time; a camera's "
                        "or stream's since its first frame)")
    add_model_options(p)
    add_inference_options(p)
    p.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write JSON to FILE (or stdout)")
    p.add_argument("--csv", nargs="?", const="-", metavar="FILE", help="write CSV to FILE (or stdout)")
    p.add_argument("--jsonl", nargs="?", const="-", metavar="FILE",
                   help="write one JSON line per photo and processed frame to FILE (or stdout) as soon as its "
                        "faces are classified, for a program that follows it while predict runs")
    p.add_argument("--annotate", metavar="DIR",
                   help="write each photo with boxes and labels to DIR/<name>.png, each video's processed "
                        "frames to DIR/<name>.mp4 (.avi where mp4 cannot be written); never over an input file")
    p.add_argument("--allow-random", action="store_true", help="run without a checkpoint (smoke tests)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def check(args: argparse.Namespace) -> list[Path]:
    """Every option that cannot be used, before any work; creates the output folders. Returns
    the input files (which no output may overwrite)."""
    from ..inference.predict import collect_inputs
    from ..inference.video import is_live

    if not args.checkpoint and not args.allow_random:
        raise UsageError("--checkpoint is required: an untrained model gives meaningless labels "
                         "(--allow-random runs one anyway, for smoke tests)")
    if args.checkpoint:
        check_checkpoint("--checkpoint", args.checkpoint)
    if not args.inputs and args.camera is None:
        raise UsageError("nothing to read: give INPUT files, folders or stream URLs, or --camera INDEX")
    outputs = [(o, d) for o, d in (("--json", args.json), ("--csv", args.csv), ("--jsonl", args.jsonl)) if d]
    to_stdout = [o for o, d in outputs if d == "-"]
    if len(to_stdout) > 1:
        raise UsageError(f"{' and '.join(to_stdout)} cannot {'both' if len(to_stdout) == 2 else 'all'} write to "
                         "stdout: give all but one of them a FILE")
    files = [(o, d) for o, d in outputs if d != "-"]
    for i, (option, dest) in enumerate(files):
        for other, other_dest in files[:i]:
            if Path(dest).resolve() == Path(other_dest).resolve():
                raise UsageError(f"{other} and {option} name the same file {dest}")
    inputs = [Path(p) for p, error in collect_inputs(args.inputs) if error is None and not is_live(p)]
    if args.annotate:
        check_output_dir("--annotate", args.annotate)
    for option, dest in files:
        check_output_file(option, dest, protected=inputs)
    check_model_options(args)
    return inputs


def run(args: argparse.Namespace) -> int:
    require("predict")
    inputs = check(args)
    from .. import faces
    from ..inference import classifier as classifiers
    from ..inference.outputs import Annotator, Timeline, write_outputs
    from ..inference.predict import Interrupted, predict_files
    from ..inference.recognizer import Recognizer
    from ..inference.video import VideoResult, camera_source

    model_options = {"attn_backend": args.attn_backend, "device": args.device, "dataset": args.dataset,
                     "classes": args.classes, "precision": args.precision, "compile": args.compile}
    if args.checkpoint:
        classifier = classifiers.load_classifier(args.checkpoint, trusted=args.trusted, **model_options)
    else:
        print("warning: no --checkpoint: random weights, the labels mean nothing", file=sys.stderr)
        classifier = classifiers.random_classifier(**model_options)
    detector = None if args.no_detect else faces.load_detector(args.detect_threshold, args.min_face)
    recognizer = Recognizer(classifier, detector, align=not args.no_align, margin=args.margin,
                            image_size=args.image_size, batch_size=args.batch_size)
    print(recognizer.describe(), file=sys.stderr)
    sources = [*args.inputs, *([] if args.camera is None else [camera_source(args.camera)])]
    reserved = inputs + [Path(d) for d in (args.json, args.csv, args.jsonl) if d and d != "-"]
    annotator = Annotator(Path(args.annotate), reserved) if args.annotate else None
    timeline = Timeline(args.jsonl) if args.jsonl else None
    receivers = [r for r in (annotator, timeline) if r is not None]
    interrupted, finished = False, False
    try:
        results = predict_files(sources, recognizer, every=args.every, max_frames=args.max_frames,
                                duration=args.duration, progress=not args.quiet,
                                on_classified=(lambda r: [receive(r) for receive in receivers]) if receivers else None)
        finished = True
    except Interrupted as stop:  # Ctrl-C: the outputs hold what was classified
        results, interrupted, finished = stop.results, True, True
    finally:
        if annotator:
            annotator.close(keep=finished)
        if timeline:
            timeline.close()
    failed = write_outputs(results, classifier.classes, args.checkpoint, args.json, args.csv, recognizer.run_info,
                           table_to_stdout=args.jsonl != "-")
    failed += (annotator.failed if annotator else []) + (timeline.failed if timeline else [])
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
    if interrupted:
        raise KeyboardInterrupt
    return 0 if n_faces else 1
