"""What `poster-fast predict` writes: JSON, CSV, the table on stdout, annotated photos and videos.

Files are written atomically (files.atomic_path); one that cannot be written is reported and
does not stop the others: the writers return the failures instead of raising."""
from __future__ import annotations

import csv
import io
import os
import re
import secrets
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data.images import load_image
from ..errors import DataError
from ..faces import LANDMARKS
from ..files import LineFile, atomic_path, json_line, json_text
from .crops import Face, PhotoResult
from .predict import Result
from .video import CAMERA, STREAM, FrameResult, VideoResult, frame_rate, open_capture

STDOUT = "-"


def landmarks_json(f: Face) -> dict[str, list[float]] | None:
    """The five landmarks by name (faces.LANDMARKS), x and y to 0.01 pixel."""
    if f.landmarks is None:
        return None
    return {name: [round(float(x), 2), round(float(y), 2)] for name, (x, y) in zip(LANDMARKS, f.landmarks)}


def face_json(f: Face) -> dict[str, Any]:
    return {"box": [f.box.x, f.box.y, f.box.w, f.box.h],
            "detection_score": None if f.detection_score is None else round(f.detection_score, 6),
            "landmarks": landmarks_json(f), "label": f.label,
            "score": None if f.score is None else round(f.score, 6), "probs": f.probs}


def frame_json(f: FrameResult) -> dict[str, Any]:
    return {"frame": f.index, "time": f.time, "error": f.error, "faces": [face_json(x) for x in f.faces]}


def result_json(r: Result) -> dict[str, Any]:
    """A photo: its faces. A video: what was read and the timeline, one entry per processed frame."""
    if not isinstance(r, VideoResult):
        return {"file": r.file, "error": r.error, "faces": [face_json(f) for f in r.faces]}
    return {"file": r.file, "error": r.error,
            "video": {"fps": r.fps, "width": r.size and r.size[0], "height": r.size and r.size[1],
                      "frames_read": r.frames_read, "every": r.every},
            "frames": [frame_json(f) for f in r.frames], "live": r.live}


def json_document(results: list[Result], classes: list[str], checkpoint: str | None,
                  run_info: dict[str, Any] | None = None) -> str:
    """The results as JSON, with `run_info` (Recognizer.run_info: the precision, the detector, ...):
    a face whose output was not finite has null label, score and probs."""
    return json_text({"checkpoint": checkpoint, **(run_info or {}), "classes": classes,
                      "results": [result_json(r) for r in results]})


def _items(r: Result) -> list[tuple[dict[str, Any], PhotoResult, str]]:
    """The photo, or each processed frame of the video: (its frame index and time, it, its name)."""
    if isinstance(r, VideoResult):
        return [({"frame": f.index, "time": "" if f.time is None else f.time}, f,
                 f"{r.file} frame {f.index}" + ("" if f.time is None else f" {f.time:.2f}s")) for f in r.frames]
    return [({}, r, r.file)]


# The CSV's columns of a face's place: the detector's score, then x and y of each landmark.
FACE_COLUMNS = ("detection_score", *(f"{name}_{c}" for name in LANDMARKS for c in "xy"))


def face_place(f: Face) -> dict[str, Any]:
    """A face's detection score and landmarks as CSV columns (FACE_COLUMNS; empty where missing)."""
    out: dict[str, Any] = {"detection_score": "" if f.detection_score is None else round(f.detection_score, 6)}
    for name, xy in (landmarks_json(f) or {}).items():
        out[f"{name}_x"], out[f"{name}_y"] = xy
    return out


def csv_rows(results: list[Result], precision: str = "", detector: str = "") -> list[dict[str, Any]]:
    """One row per face (of a photo, or of a video's frame: with the frame index and time), with
    its detection score and landmarks, every class probability, the precision it was computed in
    and the detector that found it, plus one per error."""
    out: list[dict[str, Any]] = []
    for r in results:
        for at, item, _ in _items(r):
            for i, f in enumerate(item.faces):
                out.append({"file": r.file, **at, "face": i, "x": f.box.x, "y": f.box.y, "w": f.box.w,
                            "h": f.box.h, **face_place(f), "label": f.label or "",
                            "score": "" if f.score is None else round(f.score, 6),
                            **(f.probs or {}), "precision": precision, "detector": detector, "error": ""})
            if item.error and item is not r:
                out.append({"file": r.file, **at, "error": item.error})
        if r.error:
            out.append({"file": r.file, "error": r.error})
    return out


def csv_document(results: list[Result], classes: list[str], precision: str = "", detector: str = "") -> str:
    """The CSV; the columns frame and time only where a video is among the results."""
    timeline = ["frame", "time"] if any(isinstance(r, VideoResult) for r in results) else []
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=["file", *timeline, "face", "x", "y", "w", "h", *FACE_COLUMNS, "label",
                                             "score", *classes, "precision", "detector", "error"], restval="")
    writer.writeheader()
    writer.writerows(csv_rows(results, precision, detector))
    return buf.getvalue()


def format_table(results: list[Result]) -> str:
    table = [("file", "face", "box (x,y,w,h)", "label", "score")]
    for r in results:
        for _, item, name in _items(r):
            table += [(name, str(i), f"{f.box.x},{f.box.y},{f.box.w},{f.box.h}", f.label or "-",
                       "-" if f.score is None else f"{f.score:.3f}") for i, f in enumerate(item.faces)]
            if item.error and item is not r:
                table.append((name, "-", "-", f"error: {item.error}", ""))
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


def write_outputs(results: list[Result], classes: list[str], checkpoint: str | None,
                  json_dest: str | None = None, csv_dest: str | None = None,
                  run_info: dict[str, Any] | None = None, table_to_stdout: bool = True) -> list[str]:
    """JSON and CSV where asked ("-": stdout); the table on stdout unless stdout holds one of
    them. `run_info` (Recognizer.run_info: the precision, the detector, ...) goes into the JSON,
    its precision and detector into the CSV. Returns what could not be written ("PATH (why)"),
    having written everything else."""
    precision, detector = ((run_info or {}).get(k) or "" for k in ("precision", "detector"))
    failed = []
    for dest, document in ((json_dest, lambda: json_document(results, classes, checkpoint, run_info)),
                           (csv_dest, lambda: csv_document(results, classes, precision, detector))):
        if dest:
            try:
                _write(dest, document())
            except OSError as err:
                failed.append(f"{dest} ({err.strerror or err})")
    if not table_to_stdout:
        return failed
    if STDOUT not in (json_dest, csv_dest):
        print(format_table(results))
    return failed


# The colours of the landmarks (faces.LANDMARKS): eyes blue, nose yellow, mouth corners red.
LANDMARK_COLOURS = ((0, 128, 255), (0, 128, 255), (255, 220, 0), (255, 40, 40), (255, 40, 40))


class Timeline:
    """`--jsonl`: one line of JSON per photo and per processed video frame, written as soon as its
    faces are classified, to a file (files.LineFile) or stdout, flushed each time: {"file", "error",
    "faces"}, and for a frame also "frame" and "time" (the JSON's entries). A line that cannot be
    written ends the timeline (`failed` says why); the run goes on."""

    def __init__(self, dest: str) -> None:
        self.dest = dest
        self.out: LineFile | None = None if dest == STDOUT else LineFile(Path(dest))
        self.failed: list[str] = []
        self.lines = 0

    def __call__(self, result: PhotoResult) -> None:
        if self.failed:
            return
        entry = {"file": result.file, **(frame_json(result) if isinstance(result, FrameResult) else
                                         {"error": result.error, "faces": [face_json(f) for f in result.faces]})}
        try:
            if self.out is None:
                sys.stdout.write(json_line(entry))
                sys.stdout.flush()
            else:
                self.out.write(json_line(entry))
            self.lines += 1
        except OSError as err:
            self.failed.append(f"{self.dest} ({err.strerror or err}, after {self.lines} lines)")

    def close(self) -> None:
        if self.out is not None:
            self.out.close()


def draw_faces(img: Image.Image, faces: list[Face]) -> Image.Image:
    """`img` (drawn on in place) with each classified face's box, landmarks, label and score."""
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(img.size) / 40)))
    for face in faces:
        if face.label is None:
            continue
        b = face.box
        draw.rectangle((b.x, b.y, b.x + b.w, b.y + b.h), outline=(0, 255, 0), width=width)
        dot = max(width, round(max(b.w, b.h) / 40))
        for (x, y), colour in zip(np.rint(face.landmarks) if face.landmarks is not None else (), LANDMARK_COLOURS):
            draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=colour)
        text = f"{face.label} {face.score:.2f}"
        left, top, right, bottom = draw.textbbox((b.x, b.y), text, font=font)
        y = b.y - (bottom - top) - 2 * width if b.y - (bottom - top) - 2 * width >= 0 else b.y + b.h
        draw.rectangle((b.x, y, b.x + right - left + 2 * width, y + bottom - top + 2 * width), fill=(0, 255, 0))
        draw.text((b.x + width, y + width - (top - b.y)), text, fill=(0, 0, 0), font=font)
    return img


def annotate(img: Image.Image, faces: list[Face], dest: Path) -> None:
    """Save (atomically, as PNG) a copy of `img` with each classified face's box, label and score."""
    img = draw_faces(img.copy(), faces)
    with atomic_path(dest) as tmp:
        img.save(tmp, format="PNG")


# The annotated video's codecs, first choice first: (fourcc, file extension).
VIDEO_CODECS = (("mp4v", ".mp4"), ("MJPG", ".avi"))


class AnnotatedVideo:
    """One video's processed frames, boxes and labels drawn, written to <stem>.mp4 (MPEG-4 Part 2,
    fourcc mp4v) or, where this OpenCV cannot write that, <stem>.avi (Motion JPEG), at the
    video's frame rate divided by its `every`, so that it lasts as long as the input. The
    frames of a file are read again from it as their results arrive (in order), so that no
    decoded frame waits for its batch; a live source's frames come with their results (and the
    video plays at the source's frame rate, 25 where it gives none: its timing is approximate,
    the timeline's is not). The file appears, renamed from a temporary name in the same folder,
    only once `finish` is called."""

    def __init__(self, video: VideoResult, dest_for: Callable[[str], Path]) -> None:
        import cv2

        self.capture = None if video.live else open_capture(video.file)
        self.position = 0
        width, height = video.size or (int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                                       int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        fps = (video.fps or (self.capture and frame_rate(self.capture)) or 25.0) / (1 if video.live else video.every)
        for fourcc, ext in VIDEO_CODECS:
            self.dest = dest_for(ext)
            self.tmp = self.dest.with_name(f"{self.dest.name}.{secrets.token_hex(4)}.tmp{ext}")  # ext: the container
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
            if self.writer.isOpened():
                return
            self.discard()
        self.release()
        raise OSError(f"this OpenCV cannot write {' or '.join(f'{c} {e}' for c, e in VIDEO_CODECS)} videos")

    def write(self, frame: FrameResult) -> None:
        import cv2

        if frame.pixels is not None:  # a live frame, kept for this
            bgr = frame.pixels
        else:
            while self.position < frame.index:
                if not self.capture.grab():
                    break
                self.position += 1
            ok, bgr = self.capture.read()
            if not ok:
                raise DataError(f"frame {frame.index} of {frame.file} cannot be read again")
            self.position += 1
        img = draw_faces(Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), frame.faces)
        self.writer.write(cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR))

    def finish(self) -> Path:
        self.release()
        self.writer.release()
        os.replace(self.tmp, self.dest)
        return self.dest

    def abort(self) -> None:
        self.release()
        self.discard()

    def release(self) -> None:
        if self.capture is not None:
            self.capture.release()

    def discard(self) -> None:
        """Close the writer and remove what it wrote."""
        self.writer.release()
        with suppress(OSError):
            self.tmp.unlink()


def output_stem(source: str) -> str:
    """The name an annotated photo or video is given after: a file's stem; camera:N -> cameraN; a
    stream URL's last path part (else its host), characters other than letters, digits, ".", "_"
    and "-" replaced by "_"."""
    if source.startswith(CAMERA):
        return "camera" + source[len(CAMERA):]
    if STREAM.match(source):
        parts = [p for p in STREAM.sub("", source).split("?")[0].split("/") if p]
        return re.sub(r"[^A-Za-z0-9._-]", "_", Path(parts[-1]).stem if parts else "stream") or "stream"
    return Path(source).stem


class Annotator:
    """Writes each classified photo as FOLDER/<stem>.png, reading the photo again from its file
    (so that no decoded photo waits in memory for its batch), and each video's processed frames
    as FOLDER/<stem>.mp4 (AnnotatedVideo; .avi where mp4 cannot be written). The name is never
    that of an input file, another output (`reserved`) or a folder: <stem>_1.png, ... instead.
    Files that cannot be written are collected in `failed` ("PATH (why)") and the others still
    are. A video is finished when the next file's results arrive, or at `close`."""

    def __init__(self, folder: Path, reserved: Iterable[Path] = (),
                 read: Callable[[str], Image.Image] = load_image) -> None:
        self.folder, self.read = folder, read
        self.reserved = {Path(p).resolve() for p in reserved}
        self.used: set[str] = set()
        self.failed: list[str] = []
        self.written = 0
        self.videos_written = 0
        self.video: AnnotatedVideo | None = None
        self.video_file: str | None = None  # the video whose frames arrive (None: none yet, or a photo)
        folder.mkdir(parents=True, exist_ok=True)

    def name_for(self, file: str, ext: str = ".png") -> Path:
        stem = output_stem(file)
        name, k = f"{stem}{ext}", 1
        while name in self.used or (self.folder / name).is_dir() or (self.folder / name).resolve() in self.reserved:
            name, k = f"{stem}_{k}{ext}", k + 1
        self.used.add(name)
        return self.folder / name

    def __call__(self, result: PhotoResult) -> None:
        if isinstance(result, FrameResult):
            self.add_frame(result)
            return
        self.close()
        dest = self.name_for(result.file)
        try:
            annotate(self.read(result.file), result.faces, dest)
            self.written += 1
        except (OSError, DataError) as err:
            self.failed.append(f"{dest} ({getattr(err, 'strerror', None) or err})")

    def add_frame(self, frame: FrameResult) -> None:
        if frame.file != self.video_file:
            self.close()
            self.video_file = frame.file
            try:
                self.video = AnnotatedVideo(frame.video, lambda ext: self.name_for(frame.file, ext))
            except (OSError, DataError) as err:
                self.failed.append(f"{self.folder / output_stem(frame.file)}.mp4 ({err})")
        if self.video is None:
            return
        try:
            self.video.write(frame)
        except (OSError, DataError) as err:
            self.failed.append(f"{self.video.dest} ({err})")
            self.video.abort()
            self.video = None

    def close(self, keep: bool = True) -> None:
        """Finish the video being written (`keep=False`: remove it, for a run that stopped)."""
        video, self.video, self.video_file = self.video, None, None
        if video is None:
            return
        if not keep:
            video.abort()
            return
        try:
            video.finish()
            self.videos_written += 1
        except OSError as err:
            video.abort()
            self.failed.append(f"{video.dest} ({err.strerror or err})")
