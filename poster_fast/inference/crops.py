"""What a photo's and a video frame's results hold (Face, PhotoResult), and FaceBatches, which
classifies the face crops of consecutive photos and frames together. The crops themselves come
from recognizer.Recognizer.crops."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..checks import BATCH_SIZE
from ..faces import Box
from .classifier import Classifier


@dataclass(eq=False)
class Face:
    """A face: where it is in the image (box, and the five landmarks of faces.LANDMARKS as a (5, 2)
    array of x, y, in the image's pixels; None where the detector gives none), the detector's score
    (None without a detector score), and once classified its label, that label's probability
    (`score`) and every class's probability by class name (`probs`). label, score and probs stay
    None when the model's output is not finite."""
    box: Box
    detection_score: float | None = None
    landmarks: np.ndarray | None = field(default=None, repr=False)
    label: str | None = None
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
