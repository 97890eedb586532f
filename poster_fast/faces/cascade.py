"""The fallback detector, for an OpenCV without cv2.FaceDetectorYN (or no OpenCV): a frontal-face
cascade that ships with the installed packages, OpenCV's Haar cascade where cv2 has one, else
OpenCV's LBP cascade as bundled and run by scikit-image. No scores, no landmarks; misses faces
tilted by more than about 20 degrees (docs/commands.md)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .detection import Box, Detection


class Cascade:
    """Images are searched at most `max_side` pixels wide; faces smaller than half the side of
    the largest face found are dropped (cascade false positives are mostly small), and so are
    faces smaller than `min_face` pixels."""

    landmarks = False

    def __init__(self, max_side: int = 640, min_size: int = 24, relative_min: float = 0.5, min_face: float = 0) -> None:
        self.max_side, self.min_size, self.relative_min, self.min_face = max_side, min_size, relative_min, min_face
        self._cv2 = None
        self._sk = None
        try:
            import cv2

            xml = Path(getattr(getattr(cv2, "data", None), "haarcascades", "")) / "haarcascade_frontalface_default.xml"
            if hasattr(cv2, "CascadeClassifier") and xml.is_file():
                self._cv2 = cv2.CascadeClassifier(str(xml))
        except ImportError:
            pass
        if self._cv2 is None:
            from skimage import data, feature

            self._sk = feature.Cascade(data.lbp_frontal_face_cascade_filename())
        self.name = "opencv-haar" if self._cv2 is not None else "opencv-lbp (scikit-image)"
        self.description = f"{self.name} cascade (no landmarks)"

    def __call__(self, image: np.ndarray, bgr: bool = False) -> list[Detection]:
        img = Image.fromarray(image if image.ndim == 2 or not bgr else np.ascontiguousarray(image[..., ::-1]))
        scale = min(1.0, self.max_side / max(img.size))
        small = img if scale == 1.0 else img.resize(
            (max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
        gray = np.asarray(small.convert("L"))
        if self._cv2 is not None:
            found = [tuple(int(v) for v in b) for b in self._cv2.detectMultiScale(
                gray, scaleFactor=1.1, minNeighbors=5, minSize=(self.min_size, self.min_size))]
        else:
            found = [(d["c"], d["r"], d["width"], d["height"]) for d in self._sk.detect_multi_scale(
                img=gray, scale_factor=1.1, step_ratio=1, min_size=(self.min_size, self.min_size),
                max_size=gray.shape, min_neighbor_number=8)]
        if not found:
            return []
        largest = max(max(w, h) for _, _, w, h in found)
        boxes = [Box(round(x / scale), round(y / scale), round(w / scale), round(h / scale))
                 for x, y, w, h in found if max(w, h) >= self.relative_min * largest]
        return [Detection(b) for b in sorted(boxes, key=lambda b: (b.x, b.y)) if max(b.w, b.h) >= self.min_face]
