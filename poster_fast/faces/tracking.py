"""Faces through the frames of a video at a fraction of a photo's cost: faces move little from one
processed frame to the next, so most frames need only YuNet's first pass.

Key frames (the first, then every `key_every`-th processed frame) get the whole search of a photo
(yunet.YuNet.passes). Every other frame gets the first pass (upright, 640 pixels on the long side)
and, for each face of the previous frame that pass would miss (tilted by TILTED degrees or more,
or under yunet.SEEN pixels at its scale), one pass on the region around it: REGION face sizes
square, turned upright by the face's tilt and scaled so that the face is REGION_FACE pixels. A
face that turns gradually is followed through any tilt; a face that appears already tilted or
small is found at the next key frame.
"""
from __future__ import annotations

import numpy as np

from .detection import Detection
from .yunet import SEEN, Pass, YuNet, around, as_bgr, first_scale, scaled

TILTED = 20.0  # degrees
REGION = 2.5  # the region's side, in face sizes
REGION_FACE = 96  # pixels: a face's size in its region pass


class Tracking:
    """The faces of one video's frames, in order (module docstring).

    Args:
        detector: the YuNet detector (its threshold, min_face and rotations are used).
        key_every: a key frame every this many processed frames.
    """

    def __init__(self, detector: YuNet, key_every: int = 15) -> None:
        self.detector, self.key_every = detector, key_every
        self.name, self.description, self.landmarks = detector.name, detector.description, True
        self.frames = 0
        self.previous: list[Detection] = []

    def passes(self, width: int, height: int) -> list[Pass]:
        """This frame's passes (counts the frame)."""
        key = self.frames % self.key_every == 0
        self.frames += 1
        if key:
            return self.detector.passes(width, height)
        s = first_scale(width, height, self.detector.min_face)
        out = [scaled(width, height, s)]
        for face in self.previous:
            tilt = face.tilt or 0.0
            if abs(tilt) >= TILTED or face.size * s < SEEN:
                side = round(REGION * REGION_FACE)
                out.append(around(face.centre, -tilt, REGION_FACE / face.size, (side, side)))
        return out

    def __call__(self, image: np.ndarray, bgr: bool = False) -> list[Detection]:
        bgr_image = as_bgr(image, bgr)
        height, width = bgr_image.shape[:2]
        self.previous = self.detector.search(bgr_image, self.passes(width, height))
        return self.previous
