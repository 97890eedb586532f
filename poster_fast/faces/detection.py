"""What a face detector finds: a box, a score and five landmarks per face, in the coordinates of
the image it was given; and how the finds of several searches of one image become one list."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Protocol

import numpy as np

# The five landmarks, in YuNet's order: the person's right eye (on the image's left), left eye,
# nose tip, right and left corners of the mouth.
LANDMARKS = ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")


@dataclass(frozen=True)
class Box:
    """A face box in whole pixels: the top-left corner, the width and the height."""
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True, eq=False)
class Detection:
    """A face found in an image: its box, the detector's score (None for detectors without one),
    its five landmarks (LANDMARKS, a (5, 2) float array of x, y; None where the detector gives
    none) and its in-plane rotation where the detector measured it (degrees, as `tilt`)."""
    box: Box
    score: float | None = None
    landmarks: np.ndarray | None = None
    rotation: float | None = None

    @property
    def centre(self) -> tuple[float, float]:
        return self.box.x + self.box.w / 2, self.box.y + self.box.h / 2

    @property
    def size(self) -> float:
        """The side of the square of the box's area."""
        return math.sqrt(self.box.w * self.box.h)

    @property
    def tilt(self) -> float | None:
        """The in-plane rotation of the face, in degrees, counter-clockwise as seen: as measured
        by the detector, else that of the eye line (None without landmarks)."""
        if self.rotation is not None:
            return self.rotation
        if self.landmarks is None:
            return None
        (rx, ry), (lx, ly) = self.landmarks[0], self.landmarks[1]
        return -math.degrees(math.atan2(ly - ry, lx - rx))


class Detector(Protocol):
    """Finds the faces of an image: an H x W x 3 uint8 array, RGB (`bgr=True`: BGR, as OpenCV
    decodes). `name` says which detector it is, for the outputs; `landmarks`, whether its
    detections have landmarks."""
    name: str
    landmarks: bool

    def __call__(self, image: np.ndarray, bgr: bool = False) -> list[Detection]: ...


def same_face(a: Detection, b: Detection) -> bool:
    """Two finds of one face: their centres closer than half the smaller one's size."""
    (ax, ay), (bx, by) = a.centre, b.centre
    return math.hypot(ax - bx, ay - by) < 0.5 * min(a.size, b.size)


def part_of(a: Detection, b: Detection) -> bool:
    """`a` lies within the box of `b`, a face more than twice its size (an eye or a mouth found
    as a face when a face fills the image)."""
    x, y = a.centre
    return b.size > 2 * a.size and b.box.x <= x <= b.box.x + b.box.w and b.box.y <= y <= b.box.y + b.box.h


def merge(found: Iterable[Detection], min_face: float = 0) -> list[Detection]:
    """One detection per face from the finds of several searches (scales, rotations): the
    highest-scoring find of each face is kept, finds inside a much larger face are dropped, and
    so are faces smaller than `min_face` pixels (the larger side of the box). Sorted left to
    right, then top to bottom."""
    kept: list[Detection] = []
    for d in sorted(found, key=lambda d: -(d.score or 0.0)):
        if max(d.box.w, d.box.h) >= min_face and not any(same_face(d, k) for k in kept):
            kept.append(d)
    kept = [d for d in kept if not any(part_of(d, k) for k in kept)]
    return sorted(kept, key=lambda d: (d.box.x, d.box.y))
