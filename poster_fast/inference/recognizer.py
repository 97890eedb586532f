"""Faces -> crops -> class probabilities: `Recognizer`, the Python API of poster_fast, and the one
path `poster-fast predict` runs photos and video frames through.

    rec = Recognizer.from_checkpoint("best.pt")            # or Recognizer.from_pretrained("posterv2/")
    for face in rec("photo.jpg"):                           # a path, a PIL image, or an H x W x 3 uint8 array
        print(face.box, face.detection_score, face.landmarks, face.label, face.probs)
    faces = rec(frame, bgr=True)                            # an OpenCV frame
    per_image = rec.batch([a, b, c])                        # the crops of all three through the model together
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, Sequence, TypeVar, Union

import numpy as np
import torch
from PIL import Image

from .. import faces as face_detection
from ..checks import CROP_MARGIN, IMAGE_SIZE
from ..data.images import load_image, to_rgb
from ..data.transforms import ToNormalizedTensor
from ..faces import Box, Detector, Tracking, YuNet, aligned_crop, crop_face
from . import classifier as classifiers
from .ahead import ahead
from .classifier import Classifier
from .crops import Face, FaceBatches, PhotoResult

ImageLike = Union[np.ndarray, Image.Image, str, os.PathLike]
Item = TypeVar("Item", bound=PhotoResult)
Crops = list[tuple[Face, torch.Tensor]]


def as_array(image: ImageLike, bgr: bool = False) -> tuple[np.ndarray, bool]:
    """`image` as a contiguous H x W x 3 uint8 array and whether it is BGR: a path is read as predict
    reads photos (EXIF rotation applied); a PIL image is converted to RGB; an array is taken as it is
    (H x W grey arrays are repeated to three channels).

    Raises:
        TypeError, ValueError: not an image of these kinds, naming `image`.
        DataError: a file that cannot be read.
    """
    if isinstance(image, (str, os.PathLike)):
        return np.asarray(load_image(image)), False
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb(image)), False
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image: expected a numpy array, a PIL image or a path, got {type(image).__name__}")
    shape_ok = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    if image.dtype != np.uint8 or not shape_ok or 0 in image.shape:
        raise ValueError(f"image: expected an H x W x 3 (or H x W) uint8 array, got a {image.dtype} array of "
                         f"shape {image.shape}")
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2), bgr
    return np.ascontiguousarray(image), bgr


class Recognizer:
    """Finds the faces of images, crops them (aligned by their landmarks, or axis-aligned), and
    classifies their expression.

    Args:
        classifier: the model and its class names (inference.classifier: load_classifier, ...).
        detector: finds the faces (faces.load_detector); None: each image is one face (aligned crops
            such as RAF-DB's).
        align: crop each face aligned by its five landmarks (faces.align); False, or a detector
            without landmarks: the axis-aligned square around its box.
        margin: the crop's margin on each side, a fraction of the face's size.
        image_size: the crops' side, in pixels.
        batch_size: face crops per forward pass.
        overlap: prepare the next crops (read, detect, crop) in a background thread while the model
            runs; None: where the model is on a GPU, or the CPU has more cores than torch's threads
            (`overlaps`).
    """

    def __init__(self, classifier: Classifier, detector: Detector | None, *, align: bool = True, margin: float = 0.2,
                 image_size: int = 224, batch_size: int = 32, overlap: bool | None = None) -> None:
        self.classifier, self.detector, self.align = classifier, detector, bool(align)
        self.overlap = overlaps(classifier.device) if overlap is None else bool(overlap)
        self.margin = CROP_MARGIN.check("margin", margin)
        self.image_size = IMAGE_SIZE.check("image_size", image_size)
        self.batch_size = FaceBatches(classifier, batch_size).batch_size
        self.to_tensor = ToNormalizedTensor(self.image_size)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, trusted: bool = False, dataset: str | None = None,
                        classes: Sequence[str] | None = None, device: str | None = None, precision: str = "auto",
                        compile: bool = False, attn_backend: str = "auto", **options: Any) -> "Recognizer":
        """The model in a checkpoint file (any file predict reads: ours, the authors' with
        `trusted=True`, safetensors, a save_pretrained folder), with the default detector.
        `options`: `detect` (False: no detector), `detect_threshold`, `min_face` (faces.load_detector),
        and `align`, `margin`, `image_size`, `batch_size` as in the constructor. The model's
        precision and compilation as in predict (`precision`: auto, fp32, bf16, fp16)."""
        model = classifiers.load_classifier(path, trusted=trusted, attn_backend=attn_backend, device=device,
                                            dataset=dataset, classes=classes, precision=precision, compile=compile)
        return cls.around(model, **options)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, *, dataset: str | None = None,
                        classes: Sequence[str] | None = None, device: str | None = None, precision: str = "auto",
                        compile: bool = False, attn_backend: str = "auto", **options: Any) -> "Recognizer":
        """The model in a save_pretrained folder, or a Hugging Face Hub repository ("owner/name";
        needs huggingface_hub), as POSTERV2.from_pretrained reads it; otherwise as from_checkpoint."""
        model = classifiers.pretrained_classifier(source, attn_backend=attn_backend, device=device, dataset=dataset,
                                                  classes=classes, precision=precision, compile=compile)
        return cls.around(model, **options)

    @classmethod
    def around(cls, classifier: Classifier, *, detect: bool = True, detect_threshold: float = 0.7,
               min_face: int = 16, **options: Any) -> "Recognizer":
        """A Recognizer of `classifier` with the default detector (faces.load_detector)."""
        detector = face_detection.load_detector(detect_threshold, min_face) if detect else None
        return cls(classifier, detector, **options)

    @property
    def classes(self) -> list[str]:
        return self.classifier.classes

    @property
    def aligned(self) -> bool:
        """Whether crops are aligned (the detector gives landmarks and `align` is on)."""
        return self.align and bool(getattr(self.detector, "landmarks", False))

    @property
    def run_info(self) -> dict[str, Any]:
        """How faces are found and classified, for the outputs (Classifier.run_info, the detector, alignment)."""
        return {**self.classifier.run_info, "detector": getattr(self.detector, "name", None), "aligned": self.aligned}

    def describe(self) -> str:
        """One line for stderr."""
        found = getattr(self.detector, "description", getattr(self.detector, "name", None))
        faces = "each image is a face" if self.detector is None else \
            f"faces by {found}, {'aligned' if self.aligned else 'axis-aligned'} crops"
        return f"{self.classifier.describe()}; {faces}"

    def video_detector(self) -> Detector | None:
        """The detector for one video's frames, in order (faces.Tracking for YuNet)."""
        return Tracking(self.detector) if isinstance(self.detector, YuNet) else self.detector

    def crops(self, image: np.ndarray, bgr: bool = False, detector: Detector | None = None) -> Crops:
        """The faces of an H x W x 3 uint8 array (RGB; `bgr`: BGR), each with its crop as the model's
        input: found by `detector` (default: this one's), cropped and normalised. Without a detector
        the whole image is the face."""
        height, width = image.shape[:2]
        if self.detector is None:
            return [(Face(Box(0, 0, width, height)), self.to_tensor(Image.fromarray(rgb(image, bgr))))]
        out: Crops = []
        pil: Image.Image | None = None
        for found in (detector or self.detector)(image, bgr):
            marks = None if found.landmarks is None else np.round(found.landmarks.astype(np.float64), 2)
            face = Face(found.box, found.score, marks)  # landmarks to 0.01 px, as the outputs write them
            if self.align and found.landmarks is not None:
                crop, _ = aligned_crop(image, found.landmarks, self.image_size, self.margin)
                out.append((face, self.to_tensor.normalize(rgb(crop, bgr))))
            else:
                pil = pil or Image.fromarray(rgb(image, bgr))
                out.append((face, self.to_tensor(crop_face(pil, found.box, self.margin)[0])))
        return out

    def classify(self, items: Iterable[tuple[Item, Crops]], live: bool = False) -> Iterator[Item]:
        """Items (photos or frames) with their crops -> the same items once all their faces are
        classified, in order. With `overlap`, `items` is consumed ahead in a background thread
        (inference.ahead), so that preparing the next crops overlaps the model; crops of consecutive
        items share batches. `live`: an item is never kept waiting for a batch to fill once no other
        is ready."""
        batches = FaceBatches(self.classifier, self.batch_size)
        with ahead(iter(items), self.batch_size, threaded=self.overlap) as prepared:
            for item, crops in prepared:
                yield from batches.add(item, crops)  # type: ignore[misc]
                if live and not prepared.waiting:
                    yield from batches.flush()  # type: ignore[misc]
        yield from batches.flush()  # type: ignore[misc]

    def __call__(self, image: ImageLike, *, bgr: bool = False) -> list[Face]:
        """The faces of one image, classified (see `batch`)."""
        return self.batch([image], bgr=bgr)[0]

    def batch(self, images: Iterable[ImageLike], *, bgr: bool = False) -> list[list[Face]]:
        """The faces of each image: box, detection_score, landmarks (image coordinates: a path's
        after its EXIF rotation), label, score (the label's probability) and probs (by class name);
        their crops go through the model together, `batch_size` at a time. `bgr`: the arrays are
        BGR, as OpenCV gives them."""
        def prepared() -> Iterator[tuple[PhotoResult, Crops]]:
            for i, image in enumerate(images):
                array, is_bgr = as_array(image, bgr)
                crops = self.crops(array, is_bgr)
                photo = PhotoResult(f"image {i}", [face for face, _ in crops])
                yield photo, crops

        done = list(self.classify(prepared()))
        return [photo.faces for photo in done]


def overlaps(device: torch.device) -> bool:
    """Whether preparing crops in a background thread beside the model pays: where the model runs
    on a GPU, or the CPU has more cores than torch's threads use. Where torch's threads take every
    core, detection and the model only slow each other: on a 2-core CPU, a video took about 6% less
    time through predict without the thread (benchmarks/RESULTS.md, issue 20)."""
    if device.type != "cpu":
        return True
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores > torch.get_num_threads()


def rgb(image: np.ndarray, bgr: bool) -> np.ndarray:
    return np.ascontiguousarray(image[..., ::-1]) if bgr else image
