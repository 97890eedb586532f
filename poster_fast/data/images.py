"""Image files: which names count as images (and as videos, for predict), walking folders for
them, and reading any image as 8-bit RGB with PIL. Files are opened with files.open_regular: a
FIFO, socket or device named like an image is refused, never opened to be read."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError
from ..files import open_regular

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Read with OpenCV (inference/video.py) by `poster-fast predict`.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv")


def is_video(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(VIDEO_EXTENSIONS)


def iter_images(folder: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> Iterator[Path]:
    """Image files (names ending in `extensions`) under `folder`, recursively, in sorted order.
    Hidden files and folders are skipped; links are followed, to files and folders anywhere,
    but a folder already visited (a link loop, or two links to one folder) is not walked again."""
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:
            dirs.clear()
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.lower().endswith(extensions) and not name.startswith("."):
                yield Path(root) / name


def check_image(path: str | os.PathLike, decode: bool) -> str | None:
    """Why `path` cannot be used as an image (None when it can): its header is read, and with
    `decode` its pixels too (JPEGs at a reduced scale, which still reads every byte)."""
    try:
        with open_regular(path) as fh, Image.open(fh) as img:
            if decode:
                img.draft(None, (64, 64))
                img.load()
    except Exception as err:  # PIL raises many types (UnidentifiedImageError, OSError, ...)
        return f"{type(err).__name__}: {err}" if not str(err) else str(err)
    return None


def check_images(paths: list[str], decode: bool, threads: int = 8) -> list[tuple[str, str]]:
    """(path, problem) for each file of `paths` that check_image refuses. Ctrl-C stops it at
    once: the files not yet checked are dropped, not waited for."""
    pool = ThreadPoolExecutor(max_workers=max(1, min(threads, len(paths))))
    try:
        problems = list(pool.map(lambda p: check_image(p, decode), paths))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return [(p, why) for p, why in zip(paths, problems) if why is not None]


def load_image(path: str | os.PathLike) -> Image.Image:
    """Any PIL-readable file as 8-bit RGB: EXIF rotation applied, alpha composited on
    white, 16-bit and float images rescaled. Raises DataError naming the file."""
    try:
        with open_regular(path) as fh, Image.open(fh) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
    except Exception as err:  # PIL raises many types (UnidentifiedImageError, OSError, ...)
        raise DataError(f"cannot read image {path}: {err}") from None
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img).astype(np.float64)
        top = 1.0 if img.mode == "F" and arr.max() <= 1.0 else (255.0 if arr.max() <= 255 else 65535.0)
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(base, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img
