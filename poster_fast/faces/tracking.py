"""Faces through the frames of a video at a fraction of a photo's cost: faces move and turn little
from one processed frame to the next.

Key frames (the first, then every `key_every`-th processed frame) get the whole search of a photo
(yunet.YuNet.passes, each face refined where it is upright). On every other frame each face of the
previous frame is searched for in one region pass around it, turned upright by that face's tilt
(yunet.YuNet.region): so a followed face keeps the tilt measured at the key frame, and is found
however tilted or small it is. New faces are looked for by YuNet's first pass (upright, 640 pixels
on the long side, not refined) on every `scan_every`-th frame while faces are followed, and on
every frame while none is: a face that appears between key frames is found within `scan_every`
frames where that pass can find it (upright and not small), without a measured tilt until the next
key frame. A face's tilt is measured again only at key frames (by default every 30 processed
frames: 1.2 s of a 25 frames/s video read whole). On a 640x480 one-face frame the first pass costs
about two and a half region passes, a key frame about forty (benchmarks/video_throughput.py prints
the three kinds of frame; benchmarks/RESULTS.md, issue 20).
"""
from __future__ import annotations

import numpy as np

from .detection import Detection, merge, same_face
from .yunet import YuNet, as_bgr, first_scale, scaled


class Tracking:
    """The faces of one video's frames, in order (module docstring).

    Args:
        detector: the YuNet detector (its threshold, min_face and rotations are used).
        key_every: a key frame every this many processed frames.
        scan_every: between key frames, the first pass every this many frames while faces are followed.
    """

    def __init__(self, detector: YuNet, key_every: int = 30, scan_every: int = 3) -> None:
        if key_every < 1 or scan_every < 1:
            raise ValueError(f"key_every and scan_every: expected at least 1, got {key_every} and {scan_every}")
        self.detector, self.key_every, self.scan_every = detector, key_every, scan_every
        self.name, self.description, self.landmarks = detector.name, detector.description, True
        self.frames = 0
        self.previous: list[Detection] = []
        self.searched = ""  # the last frame's searches: "key frame", "scan frame" or "region only"

    def __call__(self, image: np.ndarray, bgr: bool = False) -> list[Detection]:
        bgr_image = as_bgr(image, bgr)
        height, width = bgr_image.shape[:2]
        since_key = self.frames % self.key_every
        self.frames += 1
        if since_key == 0:
            self.searched = "key frame"
            self.previous = self.detector.search(bgr_image, self.detector.passes(width, height))
            return self.previous
        followed = [d for d in (self.detector.region(bgr_image, f, f.tilt or 0.0) for f in self.previous)
                    if d is not None]
        found: list[Detection] = []
        self.searched = "region only"
        if not followed or since_key % self.scan_every == 0:
            self.searched = "scan frame"
            first = scaled(width, height, first_scale(width, height, self.detector.min_face))
            found = self.detector.search(bgr_image, [first], refine=False)
        self.previous = merge(followed + [d for d in found if not any(same_face(d, f) for f in followed)],
                              self.detector.min_face)
        return self.previous
