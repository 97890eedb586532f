"""Face detection and cropping for `poster-fast predict` (OpenCV cascades; nothing downloaded)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int


class FaceDetector:
    """Frontal-face cascade that ships with the installed packages (no download):
    OpenCV's Haar cascade where cv2 has one (opencv 4.x), else OpenCV's LBP frontal-face
    cascade as bundled and run by scikit-image (opencv 5 dropped CascadeClassifier).

    Images are searched at most `max_side` pixels wide; faces smaller than half the side
    of the largest face found are dropped (cascade false positives are mostly small).
    """

    def __init__(self, max_side: int = 640, min_size: int = 24, relative_min: float = 0.5) -> None:
        self.max_side, self.min_size, self.relative_min = max_side, min_size, relative_min
        self._cv2 = None
        self._sk = None
        try:
            import cv2

            xml = Path(getattr(getattr(cv2, "data", None), "haarcascades", "")) / \
                "haarcascade_frontalface_default.xml"
            if hasattr(cv2, "CascadeClassifier") and xml.is_file():
                self._cv2 = cv2.CascadeClassifier(str(xml))
        except ImportError:
            pass
        if self._cv2 is None:
            from skimage import data, feature

            self._sk = feature.Cascade(data.lbp_frontal_face_cascade_filename())
        self.name = "opencv-haar" if self._cv2 is not None else "opencv-lbp (scikit-image)"

    def __call__(self, img: Image.Image) -> list[Box]:
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
        return sorted(boxes, key=lambda b: (b.x, b.y))


def crop_face(img: Image.Image, box: Box, margin: float) -> tuple[Image.Image, Box]:
    """Square crop around `box` enlarged by `margin` of its size on each side, clipped to
    the image; returns the crop and the box actually cropped."""
    side = max(box.w, box.h) * (1 + 2 * margin)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0, y0 = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    x1, y1 = min(img.width, round(cx + side / 2)), min(img.height, round(cy + side / 2))
    return img.crop((x0, y0, x1, y1)), Box(x0, y0, x1 - x0, y1 - y0)
