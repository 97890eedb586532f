"""`poster-fast export`: a trained model as ONNX, safetensors, or a Hugging Face folder."""
from __future__ import annotations

import argparse
import os
import sys
import time

from ..checks import IMAGE_SIZE, MIN_OPSET, Range
from ..data.labels import DATASETS
from ..errors import RunError, UsageError
from ..extras import require
from ..files import Reads
from .options import add_trusted_option, check_checkpoint, checkpoint_files, comma_list, number

OPSET = Range(MIN_OPSET, 99, integer=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Write a trained model in formats other programs read: ONNX (the fused W-MCSA op "
                     "translated, dynamic batch, checked with onnxruntime against PyTorch before it is "
                     "written), safetensors, and the Hugging Face layout (config.json + model.safetensors). "
                     "Class names, dataset and model configuration go into each file's metadata. "
                     "Existing files are never overwritten without --force, and the checkpoint never; "
                     "missing folders are created.")
    p.add_argument("checkpoint", help="the trained model: a checkpoint (.pt/.pth), a .safetensors file or "
                                      "a save_pretrained folder")
    p.add_argument("--onnx", metavar="FILE", help="write ONNX here (needs poster_fast[onnx])")
    p.add_argument("--safetensors", metavar="FILE", help="write the weights here as safetensors")
    p.add_argument("--pretrained", metavar="DIR",
                   help="write DIR/config.json and DIR/model.safetensors (POSTERV2.from_pretrained reads them)")
    p.add_argument("--push-to-hub", metavar="REPO",
                   help="then upload the --pretrained folder to this Hugging Face Hub repository "
                        "(needs poster_fast[hub] and a Hub login)")
    p.add_argument("--force", action="store_true",
                   help="overwrite existing output files (never the checkpoint read)")
    p.add_argument("--dataset", choices=list(DATASETS),
                   help="record this dataset's class names (default: the checkpoint's)")
    p.add_argument("--classes", type=comma_list,
                   help="comma-separated class names in model output order to record (overrides all)")
    add_trusted_option(p)
    p.add_argument("--image-size", type=number(IMAGE_SIZE), default=224,
                   help="the ONNX model's input height and width")
    p.add_argument("--opset", type=number(OPSET), default=MIN_OPSET, help=f"ONNX opset ({MIN_OPSET} or later)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime check of the ONNX file")


def validate(args: argparse.Namespace) -> None:
    """Every option that cannot be used, before any work (the outputs are checked in run)."""
    outputs = [path for path in (args.onnx, args.safetensors, args.pretrained) if path]
    if not outputs:
        raise UsageError("nothing to export: give --onnx FILE, --safetensors FILE and/or --pretrained DIR")
    if len({os.path.realpath(path) for path in outputs}) != len(outputs):
        raise UsageError(f"--onnx, --safetensors and --pretrained name the same path: {', '.join(outputs)}")
    if args.push_to_hub and not args.pretrained:
        raise UsageError("--push-to-hub uploads the --pretrained folder: give --pretrained DIR too")
    check_checkpoint("checkpoint", args.checkpoint)
    if args.onnx:
        require("onnx")
    if args.push_to_hub:
        require("hub")


def run(args: argparse.Namespace) -> int:
    validate(args)
    from ..data.labels import class_names
    from ..hub import check_export_dir, check_export_file, hub_upload, save_pretrained, save_safetensors
    from ..model import POSTERV2

    reads = Reads(checkpoint_files(args.checkpoint))  # never written over, even with --force
    for option, path in (("--onnx", args.onnx), ("--safetensors", args.safetensors)):
        if path:
            check_export_file(path, args.force, option, reads)
    if args.pretrained:
        check_export_dir(args.pretrained, args.force, "--pretrained", reads)
    model, recorded = POSTERV2.load_trained(args.checkpoint, args.trusted)
    common = dict(classes=class_names(model.num_classes, recorded, args.dataset, args.classes),
                 dataset=args.dataset or recorded.get("dataset"), recorded=recorded, overwrite=args.force)
    if args.safetensors:
        save_safetensors(args.safetensors, model, **common)
        print(f"wrote {args.safetensors}", file=sys.stderr)
    if args.pretrained:
        save_pretrained(args.pretrained, model, **common)
        print(f"wrote {args.pretrained}/ (config.json, model.safetensors)", file=sys.stderr)
        if args.push_to_hub:
            hub_upload(args.pretrained, args.push_to_hub)
            print(f"uploaded {args.pretrained}/ to the Hugging Face Hub repository {args.push_to_hub}",
                  file=sys.stderr)
    if args.onnx:
        return write_onnx(args, model, common)
    return 0


def write_onnx(args: argparse.Namespace, model, common: dict) -> int:
    """Export and check the ONNX file; RunError (status 3, nothing written) if onnxruntime's
    logits are outside the error policy."""
    from ..export import OnnxMismatch, export_onnx

    start = time.perf_counter()
    try:
        check = export_onnx(model, args.onnx, image_size=args.image_size, opset=args.opset,
                            check=not args.no_check, **common)
    except OnnxMismatch as err:
        raise RunError(str(err)) from None
    print(f"wrote {args.onnx} (opset {args.opset}, input {args.image_size}x{args.image_size}, dynamic batch; "
          f"exported and checked in {time.perf_counter() - start:.0f} s)", file=sys.stderr)
    print(check if check is not None else "onnxruntime check skipped (--no-check)", file=sys.stderr)
    return 0
