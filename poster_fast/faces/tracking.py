"""Faces through the frames of a video at a fraction of a photo's cost: faces move and turn little
from one processed frame to the next.

Key frames (the first, then every `key_every`-th processed frame) get the whole search of a photo
(yunet.YuNet.passes, each face refined where it is upright). Every other frame gets YuNet's first
pass (upright, 640 pixels on the long side, not refined) and, for each face of the previous frame,
one region pass around it turned upright by that face's tilt (yunet.YuNet.region), whose find
replaces the first pass's: so a followed face keeps the tilt measured at the key frame, and is
found however tilted or small it is. A face that appears between key frames is found by the first
pass where it can be (upright and not small), without a measured tilt, until the next key frame.
"""
from __future__ import annotations

import numpy as np

from .detection import Detection, merge, same_face
from .yunet import Pass, YuNet, as_bgr, first_scale, scaled


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

    def __call__(self, image: np.ndarray, bgr: bool = False) -> list[Detection]:
        bgr_image = as_bgr(image, bgr)
        height, width = bgr_image.shape[:2]
        key = self.frames % self.key_every == 0
        self.frames += 1
        if key:
            self.previous = self.detector.search(bgr_image, self.detector.passes(width, height))
            return self.previous
        first: Pass = scaled(width, height, first_scale(width, height, self.detector.min_face))
        found = self.detector.search(bgr_image, [first], refine=False)
        followed = [d for d in (self.detector.region(bgr_image, f, f.tilt or 0.0) for f in self.previous)
                    if d is not None]
        self.previous = merge(followed + [d for d in found if not any(same_face(d, f) for f in followed)],
                              self.detector.min_face)
        return self.previous
