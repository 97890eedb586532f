"""Photos -> faces -> class probabilities: every face of every photo is cropped, and the crops
of consecutive photos are classified together in batches."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from ..data.images import IMAGE_EXTENSIONS, iter_images, load_image
from ..data.transforms import ToNormalizedTensor
from ..errors import DataError
from ..faces import Box, FaceDetector, crop_face
from .classifier import Classifier


@dataclass
class Face:
    box: Box
    label: str = ""
    score: float = 0.0
    probs: dict[str, float] = field(default_factory=dict)


@dataclass
class PhotoResult:
    file: str
    faces: list[Face] = field(default_factory=list)
    error: str | None = None


# Called with each photo (and its decoded image) once all its faces are classified.
OnClassified = Callable[[PhotoResult, Image.Image], None]


def collect_inputs(inputs: Sequence[str]) -> list[tuple[str, str | None]]:
    """(path, error) per image: folders are searched recursively for image files."""
    out: list[tuple[str, str | None]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = [(str(p), None) for p in iter_images(path)]
            out += found or [(item, f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder")]
        elif path.is_file():
            out.append((item, None))
        else:
            out.append((item, "no such file or folder"))
    return out


class FaceBatches:
    """Face crops waiting to be classified; a photo is done once all its faces are."""

    def __init__(self, classifier: Classifier, batch_size: int) -> None:
        self.classifier, self.batch_size = classifier, batch_size
        self.crops: list[tuple[Face, torch.Tensor]] = []
        self.photos: list[tuple[PhotoResult, Image.Image | None]] = []

    def add(self, photo: PhotoResult, image: Image.Image | None,
            crops: list[tuple[Face, torch.Tensor]]) -> list[tuple[PhotoResult, Image.Image | None]]:
        """Queue a photo's crops; returns the photos done (all of them once a batch is full)."""
        self.crops += crops
        self.photos.append((photo, image))
        return self.flush() if len(self.crops) >= self.batch_size else []

    def flush(self) -> list[tuple[PhotoResult, Image.Image | None]]:
        """Classify every queued crop; returns the photos done, in input order."""
        names = self.classifier.classes
        for i in range(0, len(self.crops), self.batch_size):
            chunk = self.crops[i:i + self.batch_size]
            probs = self.classifier.probabilities(torch.stack([t for _, t in chunk]))
            for (face, _), p in zip(chunk, probs):
                k = int(p.argmax())
                face.label, face.score = names[k], float(p[k])
                face.probs = {n: round(float(v), 6) for n, v in zip(names, p)}
        done, self.crops, self.photos = self.photos, [], []
        return done


def face_crops(photo: PhotoResult, detector: FaceDetector | None, margin: float,
               to_tensor: ToNormalizedTensor) -> tuple[Image.Image | None, list[tuple[Face, torch.Tensor]]]:
    """Read the photo and crop its faces (the whole image without a detector); records the faces
    found, or the error, in `photo`."""
    try:
        img = load_image(photo.file)
    except DataError as err:
        photo.error = str(err)
        return None, []
    boxes = [Box(0, 0, img.width, img.height)] if detector is None else detector(img)
    if not boxes:
        photo.error = f"no face found by the {detector.name} detector (aligned crops: --no-detect)"
    crops = []
    for box in boxes:
        crop = img if detector is None else crop_face(img, box, margin)[0]
        photo.faces.append(Face(box))
        crops.append((photo.faces[-1], to_tensor(crop)))
    return img, crops


def predict_photos(inputs: Sequence[str], classifier: Classifier, detector: FaceDetector | None, *,
                   image_size: int = 224, margin: float = 0.2, batch_size: int = 32,
                   on_classified: OnClassified | None = None, progress: bool = True) -> list[PhotoResult]:
    """One result per image found in `inputs` (files, or folders searched recursively), in order;
    files that cannot be used get an error instead of faces."""
    from tqdm import tqdm

    to_tensor = ToNormalizedTensor(image_size)
    batches = FaceBatches(classifier, batch_size)
    results = []
    for path, error in tqdm(collect_inputs(inputs), desc="predict", unit="img", disable=not progress or None,
                            file=sys.stderr):
        photo = PhotoResult(path, error=error)
        results.append(photo)
        if error:
            continue
        img, crops = face_crops(photo, detector, margin, to_tensor)
        if crops:
            _deliver(batches.add(photo, img if on_classified else None, crops), on_classified)
    _deliver(batches.flush(), on_classified)
    return results


def _deliver(done: list[tuple[PhotoResult, Image.Image | None]], on_classified: OnClassified | None) -> None:
    if on_classified is not None:
        for photo, img in done:
            on_classified(photo, img)
