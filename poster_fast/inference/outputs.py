"""What `poster-fast predict` writes: JSON, CSV, the table on stdout, annotated photos.

Files are written atomically (files.atomic_path); one that cannot be written is reported and
does not stop the others: the writers return the failures instead of raising."""
from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from PIL import Image, ImageDraw, ImageFont

from ..data.images import load_image
from ..errors import DataError
from ..files import atomic_path, json_text
from .photos import Face, PhotoResult

STDOUT = "-"


def json_document(results: list[PhotoResult], classes: list[str], checkpoint: str | None,
                  run_info: dict[str, Any] | None = None) -> str:
    """The results as JSON, with `run_info` (Classifier.run_info: the precision, ...): a face whose
    output was not finite has null label, score and probs."""
    return json_text({"checkpoint": checkpoint, **(run_info or {}), "classes": classes, "results": [
        {"file": r.file, "error": r.error, "faces": [
            {"box": [f.box.x, f.box.y, f.box.w, f.box.h], "label": f.label,
             "score": None if f.score is None else round(f.score, 6), "probs": f.probs} for f in r.faces]}
        for r in results]})


def csv_rows(results: list[PhotoResult], precision: str = "") -> list[dict[str, Any]]:
    """One row per face (with every class probability and the precision it was computed in),
    plus one per file error."""
    out: list[dict[str, Any]] = []
    for r in results:
        for i, f in enumerate(r.faces):
            out.append({"file": r.file, "face": i, "x": f.box.x, "y": f.box.y, "w": f.box.w, "h": f.box.h,
                        "label": f.label or "", "score": "" if f.score is None else round(f.score, 6),
                        **(f.probs or {}), "precision": precision, "error": ""})
        if r.error:
            out.append({"file": r.file, "error": r.error})
    return out


def csv_document(results: list[PhotoResult], classes: list[str], precision: str = "") -> str:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=["file", "face", "x", "y", "w", "h", "label", "score", *classes,
                                             "precision", "error"], restval="")
    writer.writeheader()
    writer.writerows(csv_rows(results, precision))
    return buf.getvalue()


def format_table(results: list[PhotoResult]) -> str:
    table = [("file", "face", "box (x,y,w,h)", "label", "score")]
    for r in results:
        table += [(r.file, str(i), f"{f.box.x},{f.box.y},{f.box.w},{f.box.h}", f.label or "-",
                   "-" if f.score is None else f"{f.score:.3f}") for i, f in enumerate(r.faces)]
        if r.error:
            table.append((r.file, "-", "-", f"error: {r.error}", ""))
    widths = [max(len(row[c]) for row in table) for c in range(4)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)) + "  " + row[4] for row in table)


def _write(dest: str, text: str) -> None:
    """`text` to the file `dest` (atomically), or to stdout for "-"."""
    if dest == STDOUT:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(dest)
    with atomic_path(path) as tmp:
        tmp.write_text(text, newline="")


def write_outputs(results: list[PhotoResult], classes: list[str], checkpoint: str | None,
                  json_dest: str | None = None, csv_dest: str | None = None,
                  run_info: dict[str, Any] | None = None) -> list[str]:
    """JSON and CSV where asked ("-": stdout); the table on stdout unless stdout holds one of
    them. `run_info` (Classifier.run_info: the precision, ...) goes into the JSON, its precision
    into the CSV. Returns what could not be written ("PATH (why)"), having written everything else."""
    precision = (run_info or {}).get("precision", "")
    failed = []
    for dest, document in ((json_dest, lambda: json_document(results, classes, checkpoint, run_info)),
                           (csv_dest, lambda: csv_document(results, classes, precision))):
        if dest:
            try:
                _write(dest, document())
            except OSError as err:
                failed.append(f"{dest} ({err.strerror or err})")
    if STDOUT not in (json_dest, csv_dest):
        print(format_table(results))
    return failed


def annotate(img: Image.Image, faces: list[Face], dest: Path) -> None:
    """Save (atomically, as PNG) a copy of `img` with each classified face's box, label and score."""
    img = img.copy()
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(img.size) / 40)))
    for face in faces:
        if face.label is None:
            continue
        b = face.box
        draw.rectangle((b.x, b.y, b.x + b.w, b.y + b.h), outline=(0, 255, 0), width=width)
        text = f"{face.label} {face.score:.2f}"
        left, top, right, bottom = draw.textbbox((b.x, b.y), text, font=font)
        y = b.y - (bottom - top) - 2 * width if b.y - (bottom - top) - 2 * width >= 0 else b.y + b.h
        draw.rectangle((b.x, y, b.x + right - left + 2 * width, y + bottom - top + 2 * width), fill=(0, 255, 0))
        draw.text((b.x + width, y + width - (top - b.y)), text, fill=(0, 0, 0), font=font)
    with atomic_path(dest) as tmp:
        img.save(tmp, format="PNG")


class Annotator:
    """Writes each classified photo as FOLDER/<stem>.png, reading the photo again from its file
    (so that no decoded photo waits in memory for its batch). The name is never that of an input
    file, another output (`reserved`) or a folder: <stem>_1.png, ... instead. Photos that cannot
    be written are collected in `failed` ("PATH (why)") and the others still are."""

    def __init__(self, folder: Path, reserved: Iterable[Path] = (),
                 read: Callable[[str], Image.Image] = load_image) -> None:
        self.folder, self.read = folder, read
        self.reserved = {Path(p).resolve() for p in reserved}
        self.used: set[str] = set()
        self.failed: list[str] = []
        self.written = 0
        folder.mkdir(parents=True, exist_ok=True)

    def name_for(self, photo: PhotoResult) -> Path:
        stem = Path(photo.file).stem
        name, k = f"{stem}.png", 1
        while name in self.used or (self.folder / name).is_dir() or (self.folder / name).resolve() in self.reserved:
            name, k = f"{stem}_{k}.png", k + 1
        self.used.add(name)
        return self.folder / name

    def __call__(self, photo: PhotoResult) -> None:
        dest = self.name_for(photo)
        try:
            annotate(self.read(photo.file), photo.faces, dest)
            self.written += 1
        except (OSError, DataError) as err:
            self.failed.append(f"{dest} ({getattr(err, 'strerror', None) or err})")
