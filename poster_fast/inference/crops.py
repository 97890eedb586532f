"""Face crops -> class probabilities, in batches: what a photo's and a video frame's results hold
(Face, PhotoResult), the crops of an image (image_crops) and FaceBatches, which classifies the
crops of consecutive photos and frames together. Used by predict.py (photos) and video.py (frames)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from PIL import Image

from ..checks import BATCH_SIZE
from ..data.transforms import ToNormalizedTensor
from ..faces import Box, FaceDetector, crop_face
from .classifier import Classifier


@dataclass
class Face:
    box: Box
    label: str | None = None  # None until classified, or when the model output is not finite
    score: float | None = None
    probs: dict[str, float] | None = None


@dataclass
class PhotoResult:
    file: str
    faces: list[Face] = field(default_factory=list)
    error: str | None = None

    @property
    def classified(self) -> int:
        return sum(f.label is not None for f in self.faces)


class FaceBatches:
    """Face crops waiting to be classified; a photo is done once all its faces are."""

    def __init__(self, classifier: Classifier, batch_size: int) -> None:
        self.classifier = classifier
        self.batch_size = BATCH_SIZE.check("batch_size", batch_size)
        self.crops: list[tuple[PhotoResult, Face, torch.Tensor]] = []
        self.photos: list[PhotoResult] = []

    def add(self, photo: PhotoResult, crops: list[tuple[Face, torch.Tensor]]) -> list[PhotoResult]:
        """Queue a photo's crops; returns the photos done (all of them once a batch is full)."""
        self.crops += [(photo, face, t) for face, t in crops]
        self.photos.append(photo)
        return self.flush() if len(self.crops) >= self.batch_size else []

    def flush(self) -> list[PhotoResult]:
        """Classify every queued crop; returns the photos done, in input order. A face whose
        probabilities are not finite gets no label, and its photo an error saying so."""
        names = self.classifier.classes
        for i in range(0, len(self.crops), self.batch_size):
            chunk = self.crops[i:i + self.batch_size]
            probs = self.classifier.probabilities(torch.stack([t for _, _, t in chunk]))
            for (photo, face, _), p in zip(chunk, probs):
                if not bool(torch.isfinite(p).all()):
                    bad = next(float(v) for v in p if not math.isfinite(float(v)))
                    note = (f"face {photo.faces.index(face)}: the model output is not finite ({bad}); "
                            "the checkpoint or the precision cannot be used")
                    photo.error = f"{photo.error}; {note}" if photo.error else note
                    continue
                k = int(p.argmax())
                face.label, face.score = names[k], float(p[k])
                face.probs = {n: round(float(v), 6) for n, v in zip(names, p)}
        done, self.crops, self.photos = self.photos, [], []
        return done


def image_crops(img: Image.Image, detector: FaceDetector | None, margin: float,
                to_tensor: ToNormalizedTensor) -> list[tuple[Face, torch.Tensor]]:
    """The faces of an RGB image (the whole image without a detector), each with its crop as the
    model's input. Photos and video frames alike go through here."""
    boxes = [Box(0, 0, img.width, img.height)] if detector is None else detector(img)
    return [(Face(box), to_tensor(img if detector is None else crop_face(img, box, margin)[0])) for box in boxes]


def no_face(detector: FaceDetector) -> str:
    return f"no face found by the {detector.name} detector (aligned crops: --no-detect)"
