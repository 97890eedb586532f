"""Faces in images: detection (YuNet shipped in the package, a cascade fallback), five landmarks
per face, and the crops the model sees (aligned by the landmarks, or axis-aligned).

detection: what a detector finds (Detection: box, score, landmarks) and how finds are merged;
yunet: YuNet through cv2.FaceDetectorYN, the passes of a search; cascade: the fallback;
tracking: faces through a video's frames; detector: which detector (load_detector); align:
the alignment template and the crops. Imports neither torch nor OpenCV (cv2 loads when a
detector or a crop needs it).
"""
from __future__ import annotations

from .align import TEMPLATE, aligned_crop, crop_face, similarity
from .detection import LANDMARKS, Box, Detection, Detector, merge
from .detector import load_detector
from .tracking import Tracking
from .yunet import YuNet

__all__ = ["Box", "Detection", "Detector", "LANDMARKS", "TEMPLATE", "Tracking", "YuNet", "aligned_crop",
           "crop_face", "load_detector", "merge", "similarity"]
