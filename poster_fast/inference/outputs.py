"""What `poster-fast predict` writes: JSON, CSV, the table on stdout, annotated photos."""
from __future__ import annotations

import csv
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from PIL import Image, ImageDraw, ImageFont

from .photos import Face, PhotoResult

STDOUT = "-"


@contextmanager
def _open(dest: str) -> Iterator[IO[str]]:
    """The file `dest`, or stdout (left open) for "-"."""
    if dest == STDOUT:
        yield sys.stdout
        sys.stdout.flush()
    else:
        with open(dest, "w", newline="") as fh:
            yield fh


def write_json(results: list[PhotoResult], classes: list[str], checkpoint: str | None, dest: str,
               run_info: dict[str, Any] | None = None) -> None:
    doc = {"checkpoint": checkpoint, **(run_info or {}), "classes": classes, "results": [
        {"file": r.file, "error": r.error, "faces": [
            {"box": [f.box.x, f.box.y, f.box.w, f.box.h], "label": f.label,
             "score": round(f.score, 6), "probs": f.probs} for f in r.faces]} for r in results]}
    with _open(dest) as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")


def csv_rows(results: list[PhotoResult], precision: str = "") -> list[dict[str, Any]]:
    """One row per face (with every class probability and the precision it was computed in),
    plus one per file error."""
    out: list[dict[str, Any]] = []
    for r in results:
        for i, f in enumerate(r.faces):
            out.append({"file": r.file, "face": i, "x": f.box.x, "y": f.box.y, "w": f.box.w,
                        "h": f.box.h, "label": f.label, "score": round(f.score, 6), **f.probs,
                        "precision": precision, "error": ""})
        if r.error:
            out.append({"file": r.file, "error": r.error})
    return out


def write_csv(results: list[PhotoResult], classes: list[str], dest: str, precision: str = "") -> None:
    fields = ["file", "face", "x", "y", "w", "h", "label", "score", *classes, "precision", "error"]
    with _open(dest) as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(csv_rows(results, precision))


def format_table(results: list[PhotoResult]) -> str:
    table = [("file", "face", "box (x,y,w,h)", "label", "score")]
    for r in results:
        table += [(r.file, str(i), f"{f.box.x},{f.box.y},{f.box.w},{f.box.h}", f.label, f"{f.score:.3f}")
                  for i, f in enumerate(r.faces)]
        if r.error:
            table.append((r.file, "-", "-", f"error: {r.error}", ""))
    widths = [max(len(row[c]) for row in table) for c in range(4)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)) + "  " + row[4] for row in table)


def write_outputs(results: list[PhotoResult], classes: list[str], checkpoint: str | None,
                  json_dest: str | None = None, csv_dest: str | None = None,
                  run_info: dict[str, Any] | None = None) -> None:
    """JSON and CSV where asked ("-": stdout); the table on stdout unless stdout holds one of them.
    `run_info` (Classifier.run_info: the precision, ...) goes into the JSON, its precision into
    the CSV."""
    if json_dest:
        write_json(results, classes, checkpoint, json_dest, run_info)
    if csv_dest:
        write_csv(results, classes, csv_dest, (run_info or {}).get("precision", ""))
    if STDOUT not in (json_dest, csv_dest):
        print(format_table(results))


def annotate(img: Image.Image, faces: list[Face], dest: Path) -> None:
    """Save a copy of `img` with each face's box, label and score drawn on it."""
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


class Annotator:
    """Writes each classified photo as FOLDER/<stem>.png (<stem>_1.png, ... when stems repeat)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.used: set[str] = set()
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, photo: PhotoResult, img: Image.Image) -> None:
        stem = Path(photo.file).stem
        name, k = f"{stem}.png", 1
        while name in self.used:
            name, k = f"{stem}_{k}.png", k + 1
        self.used.add(name)
        annotate(img, photo.faces, self.folder / name)
