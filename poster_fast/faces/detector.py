"""Which detector finds the faces: YuNet (the shipped model, through cv2.FaceDetectorYN), or where
this OpenCV has no FaceDetectorYN (or there is no OpenCV) the cascade fallback."""
from __future__ import annotations

import sys

from ..checks import DETECT_THRESHOLD, MIN_FACE
from .cascade import Cascade
from .detection import Detector
from .yunet import YuNet, available


def load_detector(threshold: float = 0.7, min_face: int = 16, warn: bool = True) -> Detector:
    """The face detector: YuNet with `threshold` (the lowest score kept) and `min_face` (pixels:
    smaller faces are not reported), or the cascade (no scores, no landmarks; `threshold` does not
    apply) where cv2.FaceDetectorYN is missing, saying so on stderr when `warn`.

    Raises:
        TypeError, ValueError: an argument outside its limits, naming it.
        DataError: the shipped model file does not match its sha256.
    """
    threshold = DETECT_THRESHOLD.check("threshold", threshold)
    min_face = MIN_FACE.check("min_face", min_face)
    if available():
        return YuNet(threshold, min_face)
    detector = Cascade(min_face=min_face)
    if warn:
        print(f"warning: this OpenCV has no FaceDetectorYN (OpenCV >= 4.8 has): faces are found with the "
              f"{detector.name} cascade, without landmarks, and crops are not aligned", file=sys.stderr)
    return detector
