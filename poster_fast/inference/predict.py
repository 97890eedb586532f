"""Photos and videos -> faces -> class probabilities, for `poster-fast predict`: every face of
every photo is cropped, and the crops of consecutive photos are classified together in batches
(crops.FaceBatches). Videos among the inputs are read frame by frame (video.py), their frames'
crops joining the same batches.

Memory is bounded by the batch of face crops: a decoded photo is dropped as soon as its faces
are cropped (whoever needs it later, such as outputs.Annotator, reads the file again)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Sequence, Union

import torch

from ..checks import CROP_MARGIN, FRAME_STEP, IMAGE_SIZE
from ..data.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_video, iter_images, load_image
from ..data.transforms import ToNormalizedTensor
from ..errors import DataError
from ..faces import FaceDetector
from ..files import file_problem
from .classifier import Classifier
from .crops import Face, FaceBatches, PhotoResult, image_crops, no_face
from .video import VideoResult, frame_crops

# Called with each photo once all its faces are classified (with each processed frame of a
# video, a video.FrameResult, in order, whether it has faces or not).
OnClassified = Callable[[PhotoResult], None]
Result = Union[PhotoResult, VideoResult]


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """(path, error) per image or video: folders are searched recursively for image and video
    files (iter_images); a file reached twice (named twice, or through a link) is listed once.
    What is not a regular file (a FIFO, a socket, a device, a broken link) gets an error saying
    what it is, and is never opened (files.file_problem)."""
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
            else:
                found = [item]
        except OSError as err:
            out.append((item, f"cannot be read: {err.strerror or err}"))
            continue
        for name in found:
            problem = file_problem(name)
            if problem is not None:
                out.append((name, "no such file or folder" if problem == "does not exist" else problem))
                continue
            real = os.path.realpath(name)
            if real not in seen:
                seen.add(real)
                out.append((name, None))
    return out


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


def predict_files(inputs: Sequence[str | os.PathLike], classifier: Classifier, detector: FaceDetector | None, *,
                  image_size: int = 224, margin: float = 0.2, batch_size: int = 32, every: int = 1,
                  on_classified: OnClassified | None = None, progress: bool = True) -> list[Result]:
    """Classify the expression of every face in photos and videos.

    Args:
        inputs: image and video files, or folders (searched recursively).
        classifier: the model and its class names (inference.classifier.load_classifier).
        detector: finds the faces; None: each image is one face crop (aligned crops).
        image_size: the crops' size; margin: the crop margin per side, a fraction of the face box.
        batch_size: face crops per forward pass (crops of several photos and frames together).
        every: of a video, classify frames 0, every, 2*every, ...
        on_classified: called with each photo (and each processed frame of a video), in order,
            once all its faces are classified.
        progress: show a progress bar on stderr.

    Returns:
        One result per image or video found, in order: a PhotoResult per image, a
        video.VideoResult per file with a video extension (data.images.VIDEO_EXTENSIONS). Files
        that cannot be used get an error instead of faces.

    Raises:
        TypeError, ValueError: an argument outside its limits (poster_fast.checks), naming it.
    """
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
