"""`poster-fast predict`: classify the facial expression of every face in photos."""
from __future__ import annotations

import argparse
import csv
import json
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .data import DATASETS, Box, DataError, IMAGE_EXTENSIONS, crop_face, iter_images, label_table

META_KEYS = ("num_classes", "dataset", "classes", "epoch", "best_acc")


def load_trained(path: str | Path, trusted: bool = False,
                 attn_backend: str = "auto") -> tuple[torch.nn.Module, dict[str, Any]]:
    """A POSTERV2 sized and loaded from `path`, and the file's metadata (classes, dataset, ...)
    where it has any (files written by `poster-fast train`; the authors' files have none)."""
    from . import POSTERV2
    from .checkpoint import CheckpointError

    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        obj = None  # the authors' pickled training files: read_state_dict explains / unpickles
    meta = {k: obj[k] for k in META_KEYS if k in obj} if isinstance(obj, dict) and "state_dict" in obj else {}
    model = POSTERV2.from_checkpoint(obj if obj is not None else path, trusted=trusted,
                                     attn_backend=attn_backend)
    return model, meta


def class_names(num_classes: int, meta: dict[str, Any], dataset: str | None,
                classes: str | None) -> list[str]:
    """--classes, else --dataset's table, else the names the checkpoint recorded."""
    if classes:
        names = [c.strip() for c in classes.split(",")]
        source = "--classes"
    elif dataset:
        names, source = list(DATASETS[dataset].classes), f"--dataset {dataset}"
        if meta.get("dataset") and meta["dataset"] != dataset:
            print(f"warning: the checkpoint was trained on {meta['dataset']}, labelling as {dataset}",
                  file=sys.stderr)
    elif meta.get("classes"):
        names, source = list(meta["classes"]), "the checkpoint"
    elif meta.get("dataset") in DATASETS:
        names, source = list(DATASETS[meta["dataset"]].classes), f"dataset {meta['dataset']}"
    else:
        raise DataError("the checkpoint records no class names: pass --dataset or --classes")
    if len(names) != num_classes:
        raise DataError(f"{source} gives {len(names)} classes but the model has {num_classes}")
    return names


@dataclass
class Face:
    box: Box
    label: str = ""
    score: float = 0.0
    probs: dict[str, float] = field(default_factory=dict)


@dataclass
class FileResult:
    file: str
    faces: list[Face] = field(default_factory=list)
    error: str | None = None


def collect_inputs(inputs: Sequence[str]) -> list[tuple[str, str | None]]:
    """(path, error) per image: folders are searched recursively for image files."""
    out: list[tuple[str, str | None]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = [(str(p), None) for p in iter_images(path)]
            out += found or [(item, f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder")]
        elif path.is_file():
            out.append((item, None))
        else:
            out.append((item, "no such file or folder"))
    return out


def annotate(img: Any, faces: list[Face], dest: Path) -> None:
    from PIL import ImageDraw, ImageFont

    img = img.copy()
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(img.size) / 40)))
    for face in faces:
        b = face.box
        draw.rectangle((b.x, b.y, b.x + b.w, b.y + b.h), outline=(0, 255, 0), width=width)
        text = f"{face.label} {face.score:.2f}"
        left, top, right, bottom = draw.textbbox((b.x, b.y), text, font=font)
        y = b.y - (bottom - top) - 2 * width if b.y - (bottom - top) - 2 * width >= 0 else b.y + b.h
        draw.rectangle((b.x, y, b.x + right - left + 2 * width, y + bottom - top + 2 * width), fill=(0, 255, 0))
        draw.text((b.x + width, y + width - (top - b.y)), text, fill=(0, 0, 0), font=font)
    img.save(dest)


def predict(args: argparse.Namespace) -> tuple[list[FileResult], list[str]]:
    from tqdm import tqdm

    from . import POSTERV2
    from .data import FaceDetector, ToNormalizedTensor, load_image

    if args.checkpoint:
        model, meta = load_trained(args.checkpoint, args.trusted, args.attn_backend)
    elif args.allow_random:
        print("warning: no --checkpoint: random weights, the labels mean nothing", file=sys.stderr)
        n = len(args.classes.split(",")) if args.classes else len(DATASETS[args.dataset or "rafdb"].classes)
        model, meta = POSTERV2(n, attn_backend=args.attn_backend), {}
        args.dataset = args.dataset or (None if args.classes else "rafdb")
    else:
        raise DataError("--checkpoint is required: an untrained model gives meaningless labels "
                        "(--allow-random runs one anyway, for smoke tests)")
    names = class_names(model.num_classes, meta, args.dataset, args.classes)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).eval()
    detector = None if args.no_detect else FaceDetector()
    to_tensor = ToNormalizedTensor(args.image_size)
    annotate_dir = Path(args.annotate) if args.annotate else None
    if annotate_dir:
        annotate_dir.mkdir(parents=True, exist_ok=True)
    used_names: set[str] = set()

    results: list[FileResult] = []
    pending: list[tuple[Face, torch.Tensor]] = []  # crops waiting for a batch
    to_draw: list[tuple[FileResult, Any]] = []  # images whose faces are in `pending`

    def flush() -> None:
        with torch.inference_mode():
            for i in range(0, len(pending), args.batch_size):
                chunk = pending[i:i + args.batch_size]
                x = torch.stack([t for _, t in chunk]).to(device)
                probs = model(x).float().softmax(dim=1).cpu()
                for (face, _), p in zip(chunk, probs):
                    k = int(p.argmax())
                    face.label, face.score = names[k], float(p[k])
                    face.probs = {n: round(float(v), 6) for n, v in zip(names, p)}
        pending.clear()
        for res, img in to_draw:
            stem = Path(res.file).stem
            name, k = f"{stem}.png", 1
            while name in used_names:
                name, k = f"{stem}_{k}.png", k + 1
            used_names.add(name)
            annotate(img, res.faces, annotate_dir / name)
        to_draw.clear()

    files = collect_inputs(args.inputs)
    for path, error in tqdm(files, desc="predict", unit="img", disable=args.quiet or None, file=sys.stderr):
        res = FileResult(path, error=error)
        results.append(res)
        if error:
            continue
        try:
            img = load_image(path)
        except DataError as err:
            res.error = str(err)
            continue
        boxes = [Box(0, 0, img.width, img.height)] if detector is None else detector(img)
        if not boxes:
            res.error = f"no face found by the {detector.name} detector (aligned crops: --no-detect)"
            continue
        for box in boxes:
            crop = img if detector is None else crop_face(img, box, args.margin)[0]
            res.faces.append(Face(box))
            pending.append((res.faces[-1], to_tensor(crop)))
        if annotate_dir:
            to_draw.append((res, img))
        if len(pending) >= args.batch_size:
            flush()
    flush()
    return results, names


def write_outputs(results: list[FileResult], args: argparse.Namespace, names: list[str]) -> None:
    def rows() -> list[dict[str, Any]]:
        out = []
        for r in results:
            for i, f in enumerate(r.faces):
                out.append({"file": r.file, "face": i, "x": f.box.x, "y": f.box.y, "w": f.box.w,
                            "h": f.box.h, "label": f.label, "score": round(f.score, 6),
                            **f.probs, "error": ""})
            if r.error:
                out.append({"file": r.file, "error": r.error})
        return out

    def open_out(dest: str):
        return open(dest, "w", newline="") if dest != "-" else _NoClose(sys.stdout)

    if args.json:
        doc = {"checkpoint": args.checkpoint, "classes": names, "results": [
            {"file": r.file, "error": r.error, "faces": [
                {"box": [f.box.x, f.box.y, f.box.w, f.box.h], "label": f.label,
                 "score": round(f.score, 6), "probs": f.probs} for f in r.faces]} for r in results]}
        with open_out(args.json) as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
    if args.csv:
        fields = ["file", "face", "x", "y", "w", "h", "label", "score", *names, "error"]
        with open_out(args.csv) as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows(rows())
    if "-" not in (args.json, args.csv):
        table = [("file", "face", "box (x,y,w,h)", "label", "score")]
        for r in results:
            table += [(r.file, str(i), f"{f.box.x},{f.box.y},{f.box.w},{f.box.h}", f.label, f"{f.score:.3f}")
                      for i, f in enumerate(r.faces)]
            if r.error:
                table.append((r.file, "-", "-", f"error: {r.error}", ""))
        widths = [max(len(row[c]) for row in table) for c in range(4)]
        for row in table:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths)) + "  " + row[4])


class _NoClose:
    """stdout as a context manager that is not closed on exit."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __enter__(self) -> Any:
        return self.stream

    def __exit__(self, *exc: Any) -> None:
        self.stream.flush()


def run(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError

    try:
        results, names = predict(args)
    except (DataError, CheckpointError) as err:
        print(f"poster-fast predict: error: {err}", file=sys.stderr)
        return 2
    write_outputs(results, args, names)
    n_faces = sum(len(r.faces) for r in results)
    n_err = sum(r.error is not None for r in results)
    print(f"{len(results)} images, {n_faces} faces classified, {n_err} with errors", file=sys.stderr)
    return 0 if n_faces else 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict", help="classify facial expressions in photos",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Find faces, crop them and classify their expression.\n\nClass names per "
                    "dataset (model output index: official label = name):\n" +
                    "\n".join(f"  {d}: {label_table(d)}" for d in DATASETS) +
                    "\nExit status: 0 if any face was classified, 1 if none, 2 on a usage error.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (recursive)")
    p.add_argument("--checkpoint", help="trained POSTER V2 checkpoint (.pt/.pth)")
    p.add_argument("--dataset", choices=list(DATASETS),
                   help="label the outputs with this dataset's classes (default: the checkpoint's)")
    p.add_argument("--classes", help="comma-separated class names in model output order (overrides all)")
    p.add_argument("--no-detect", action="store_true", help="inputs are already face crops (e.g. RAF-DB aligned)")
    p.add_argument("--margin", type=float, default=0.2, help="crop margin per side, fraction of the face box")
    p.add_argument("--image-size", type=int, default=224, help="crop size fed to the model")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--attn-backend", default="auto", help="W-MCSA backend (see poster_fast.ops)")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write JSON to FILE (or stdout)")
    p.add_argument("--csv", nargs="?", const="-", metavar="FILE", help="write CSV to FILE (or stdout)")
    p.add_argument("--annotate", metavar="DIR", help="write each photo with boxes and labels to DIR")
    p.add_argument("--allow-random", action="store_true", help="run without a checkpoint (smoke tests)")
    p.add_argument("--trusted", action="store_true",
                   help="unpickle checkpoints that hold Python objects (the authors' training files)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
