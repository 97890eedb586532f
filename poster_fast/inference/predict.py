"""Photos -> faces -> class probabilities: every face of every photo is cropped, and the crops
of consecutive photos are classified together in batches. Videos among the inputs are read
frame by frame (inference/video.py), their frames' crops joining the same batches.

Memory is bounded by the batch of face crops: a decoded photo is dropped as soon as its faces
are cropped (whoever needs it later, such as outputs.Annotator, reads the file again)."""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, Union

import torch
from PIL import Image

from ..checks import BATCH_SIZE, CROP_MARGIN, FRAME_STEP, IMAGE_SIZE
from ..data.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_video, iter_images, load_image
from ..data.transforms import ToNormalizedTensor
from ..errors import DataError
from ..faces import Box, FaceDetector, crop_face
from .classifier import Classifier

if TYPE_CHECKING:
    from .video import VideoResult


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


# Called with each photo once all its faces are classified (with each processed frame of a
# video, a video.FrameResult, in order, whether it has faces or not).
OnClassified = Callable[[PhotoResult], None]
Result = Union[PhotoResult, "VideoResult"]


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """(path, error) per image or video: folders are searched recursively for image and video
    files (iter_images); a file reached twice (named twice, or through a link) is listed once."""
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for item in map(str, inputs):
        path = Path(item)
        try:
            if path.is_dir():
                found = [str(p) for p in iter_images(path, IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)]
                if not found:
                    out.append((item, f"no image or video files ({', '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)}) "
                                      "in folder"))
            elif path.is_file():
                found = [item]
            else:
                broken = path.is_symlink()
                out.append((item, "a link to nothing (broken symbolic link)" if broken else "no such file or folder"))
                continue
        except OSError as err:
            out.append((item, f"cannot be read: {err.strerror or err}"))
            continue
        for name in found:
            real = os.path.realpath(name)
            if real not in seen:
                seen.add(real)
                out.append((name, None))
    return out


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


def face_crops(photo: PhotoResult, detector: FaceDetector | None, margin: float,
               to_tensor: ToNormalizedTensor) -> list[tuple[Face, torch.Tensor]]:
    """Read the photo and crop its faces (image_crops); records the faces found, or the error,
    in `photo`. The decoded photo is not kept."""
    try:
        img = load_image(photo.file)
    except DataError as err:
        photo.error = str(err)
        return []
    crops = image_crops(img, detector, margin, to_tensor)
    if not crops:
        photo.error = no_face(detector)  # (without a detector, the whole image is a crop)
    photo.faces += [face for face, _ in crops]
    return crops


def predict_photos(inputs: Sequence[str | os.PathLike], classifier: Classifier, detector: FaceDetector | None, *,
                   image_size: int = 224, margin: float = 0.2, batch_size: int = 32, every: int = 1,
                   on_classified: OnClassified | None = None, progress: bool = True) -> list[Result]:
    """One result per image or video found in `inputs` (files, or folders searched recursively),
    in order: a PhotoResult per image, a video.VideoResult (every `every`-th frame classified)
    per file with a video extension (data.images.VIDEO_EXTENSIONS). Files that cannot be used
    get an error instead of faces. TypeError/ValueError name an argument outside its limits
    (poster_fast.checks)."""
    from tqdm import tqdm

    image_size = IMAGE_SIZE.check("image_size", image_size)
    margin = CROP_MARGIN.check("margin", margin)
    every = FRAME_STEP.check("every", every)
    to_tensor = ToNormalizedTensor(image_size)
    batches = FaceBatches(classifier, batch_size)
    results: list[Result] = []
    for path, error in tqdm(collect_inputs(inputs), desc="predict", unit="file", disable=not progress or None,
                            file=sys.stderr):
        if is_video(path):
            from .video import VideoResult, frame_crops  # OpenCV is imported where a video is read

            video = VideoResult(path, error=error, every=every)
            results.append(video)
            for frame, crops in ([] if error else frame_crops(video, detector, margin, to_tensor)):
                _deliver(batches.add(frame, crops), on_classified)
            continue
        photo = PhotoResult(path, error=error)
        results.append(photo)
        if error:
            continue
        crops = face_crops(photo, detector, margin, to_tensor)
        if crops:
            _deliver(batches.add(photo, crops), on_classified)
    _deliver(batches.flush(), on_classified)
    return results


def _deliver(done: list[PhotoResult], on_classified: OnClassified | None) -> None:
    if on_classified is not None:
        for photo in done:
            on_classified(photo)
