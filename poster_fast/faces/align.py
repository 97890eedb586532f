"""Face crops for the model: aligned by the five landmarks (the default), or the axis-aligned square
around the box (`--no-align`, and for detectors without landmarks).

The alignment template places the five landmarks (detection.LANDMARKS) where they lie, on average,
in an upright face's box: TEMPLATE holds them relative to the box's centre, in units of the box's
larger side: the mean of YuNet's landmarks on the upright faces of tests/face_images.py (the
astronaut and LFW faces), made left-right symmetric (the refined landmarks of the current search
lie within 0.01 face sizes of it: benchmarks/RESULTS.md): the eyes level, 0.366 of the face
size apart, 0.152 above its centre. The crop is the square of side (1 + 2 * margin) face sizes
centred on the face, as the axis-aligned crop is: an upright face's aligned crop frames it as
the axis-aligned crop does at the same margin, and a tilted face's crop is the same face turned
upright. The similarity transform (rotation, uniform scale, shift; no shear, no mirroring) is
the least-squares fit of the five landmarks onto the template, so no single landmark decides it.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .detection import Box

TEMPLATE = np.array([[-0.183, -0.152], [0.183, -0.152], [0.0, 0.05], [-0.153, 0.222], [0.153, 0.222]])


def template(size: int, margin: float) -> np.ndarray:
    """The template's five points in a `size` x `size` crop with `margin` (pixel coordinates)."""
    return (0.5 + TEMPLATE / (1 + 2 * margin)) * size


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform (rotation, uniform scale, shift) taking the points `src` closest
    to `dst` in least squares."""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    x, y = src - ms, dst - md
    norm = float((x ** 2).sum())
    if norm == 0.0:
        raise ValueError("landmarks: all five points coincide")
    a = float((x * y).sum()) / norm
    b = float((x[:, 0] * y[:, 1] - x[:, 1] * y[:, 0]).sum()) / norm
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (md - rot @ ms)[:, None]])


def aligned_crop(image: np.ndarray, landmarks: np.ndarray, size: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The `size` x `size` crop of `image` (H x W x C, any channel order) that puts `landmarks` on
    the template, and the transform used (2x3, image -> crop). Where the face is more than twice
    the crop's size, the crop is warped larger and then reduced by area averaging (no aliasing).
    Pixels outside the image repeat its edge."""
    import cv2

    m = similarity(landmarks, template(size, margin))
    scale = math.hypot(m[0, 0], m[1, 0])
    k = min(8, math.ceil(0.5 / scale)) if scale < 0.5 else 1
    big = cv2.warpAffine(image, m * np.array([[k], [k]]), (size * k, size * k), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    crop = big if k == 1 else cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    return crop, m


def crop_face(img: Image.Image, box: Box, margin: float) -> tuple[Image.Image, Box]:
    """The axis-aligned crop: a square around `box` enlarged by `margin` of its larger side on each
    side, clipped to the image; returns the crop and the box actually cropped."""
    side = max(box.w, box.h) * (1 + 2 * margin)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0, y0 = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    x1, y1 = min(img.width, round(cx + side / 2)), min(img.height, round(cy + side / 2))
    return img.crop((x0, y0, x1, y1)), Box(x0, y0, x1 - x0, y1 - y0)
