"""YuNet, the face detector shipped in the package (models/yunet_s_640_640.onnx, Apache-2.0,
from ShiqiYu/libfacedetection.train: models/SOURCE), run by OpenCV's cv2.FaceDetectorYN.

An image is searched in several passes whose finds are merged (detection.merge):
- at 640 pixels on its long side, YuNet's training size (small images enlarged, at most 4x;
  large ones reduced, so that a face that fills them stays within what YuNet finds);
- where faces of `min_face` pixels would be under 32 pixels at that scale, once more at the
  scale that makes them 32 pixels (at most 1920 pixels on the long side), keeping only the faces
  too small for the first pass (enlarged, larger things are taken for faces);
- rotated by each angle of `rotations` (default +-40 degrees) at the image's own scale (at most
  1024 pixels on the long side; the first pass's where that is larger), on a canvas
  grown to hold the whole rotated image: YuNet alone finds faces tilted up to about 30 degrees,
  these passes those tilted up to about 70.
Each pass is a warp of the image; its finds are mapped back through the inverse warp, so boxes
and landmarks are in the coordinates of the image given.

YuNet's landmarks keep the eyes nearly level in whatever view it is given (on the astronaut tilted
by 30 degrees, YuNet-s puts them within 3 degrees of level), so they do not say how a face is
tilted; its score does, peaking where the face is upright. Each face found is therefore refined
(`upright`): the region around it is searched turned by its estimated tilt and REFINE_STEP degrees
either side, moving towards the higher score; the tilt is the peak of a parabola fitted to the
scores at seven angles around the highest; and the box and landmarks are those found in the region
turned by that tilt, where the face is upright and the
landmarks are right (the aligned crop's eye line within 4 degrees of level on the astronaut tilted
by up to 45 degrees, tests/test_faces.py). A face that none of these region views finds again (at
the score threshold) is dropped as a false face: on tests/face_images.py that removes the whole
search's one false face (a galaxy of hubble_deep_field, score 0.701) and none of the 88 true faces
(benchmarks/RESULTS.md, issue 20).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from .detection import Box, Detection, merge, same_face

MODEL = "yunet_s_640_640.onnx"
MODEL_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
NAME = "yunet-s"
INPUT_SIDE = 640  # the long side of the first pass
MAX_SIDE = 1920  # the long side of the finest pass
ROTATED_SIDE = 1024  # the long side of the rotated passes, for images larger than the first pass
MAX_ENLARGE = 4.0
SEEN = 32  # pixels: the face size YuNet-s finds reliably (smaller faces are searched enlarged)
NMS_IOU = 0.3  # YuNet's own non-maximum suppression, within a pass
REGION = 2.5  # a region pass's side, in face sizes
REGION_FACE = 96  # pixels: a face's size in its region pass
REFINE_STEP = 15.0  # degrees between the refining views
MAX_MOVES = 3  # how far the refining views move towards a higher score, in REFINE_STEPs
FIT_ANGLES = (8.0, 16.0, 24.0)  # degrees either side of the highest score: the parabola's points


@dataclass(frozen=True)
class Pass:
    """One search: the image warped by `matrix` (2x3, image -> canvas) onto a canvas of `size`;
    it reports faces up to `max_face` pixels (the larger side of the box, in the image)."""
    matrix: np.ndarray
    size: tuple[int, int]  # width, height
    max_face: float = math.inf

    @property
    def scale(self) -> float:
        return math.hypot(self.matrix[0, 0], self.matrix[1, 0])


def scaled(width: int, height: int, s: float, max_face: float = math.inf) -> Pass:
    return Pass(np.array([[s, 0.0, 0.0], [0.0, s, 0.0]]), (max(1, round(width * s)), max(1, round(height * s))),
                max_face)


def rotated(width: int, height: int, degrees: float, s: float) -> Pass:
    """The image rotated counter-clockwise by `degrees` about its centre and scaled by `s`, on a
    canvas that holds all of it."""
    a = math.radians(degrees)
    c, n = abs(math.cos(a)) * s, abs(math.sin(a)) * s
    size = (max(1, round(width * c + height * n)), max(1, round(width * n + height * c)))
    return around((width / 2, height / 2), degrees, s, size)


def around(centre: tuple[float, float], degrees: float, s: float, size: tuple[int, int]) -> Pass:
    """`centre` of the image to the centre of a canvas of `size`, rotated counter-clockwise by
    `degrees` and scaled by `s` about it."""
    a = math.radians(degrees)
    cos, sin = math.cos(a) * s, math.sin(a) * s
    m = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]])
    m[:, 2] = np.array(size, dtype=float) / 2 - m[:, :2] @ np.array(centre, dtype=float)
    return Pass(m, size)


def first_scale(width: int, height: int, min_face: float) -> float:
    """The scale of the first pass: the long side to INPUT_SIDE (enlarged at most MAX_ENLARGE
    times), or smaller where faces of `min_face` pixels are still SEEN pixels there."""
    return min(MAX_ENLARGE, INPUT_SIDE / max(width, height), SEEN / max(min_face, 1.0))


def fine_scale(width: int, height: int, min_face: float) -> float | None:
    """The scale of the second pass, at which faces of `min_face` pixels are SEEN pixels (at most
    MAX_SIDE on the long side); None where it would not be finer than the first."""
    fine = min(MAX_SIDE / max(width, height), SEEN / max(min_face, 1.0))
    return fine if fine > 1.2 * first_scale(width, height, min_face) else None


def rotated_scale(width: int, height: int, min_face: float) -> float:
    """The scale of the rotated passes: the image's own (at most ROTATED_SIDE on the long side),
    or the first pass's where that is larger."""
    return max(first_scale(width, height, min_face), min(1.0, ROTATED_SIDE / max(width, height)))


def model_bytes() -> bytes:
    """The shipped model file, checked against its sha256; DataError when it differs."""
    data = resources.files(__package__).joinpath("models", MODEL).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256:
        raise DataError(f"the face detector file {MODEL} shipped in poster_fast has sha256 {digest}, "
                        f"expected {MODEL_SHA256}: the installation is damaged, reinstall poster_fast")
    return data


def available() -> bool:
    """Whether this OpenCV has cv2.FaceDetectorYN."""
    try:
        import cv2
    except ImportError:
        return False
    return hasattr(cv2, "FaceDetectorYN")


class YuNet:
    """YuNet-s through OpenCV (cv2.FaceDetectorYN).

    Args:
        threshold: the lowest score of a face kept (YuNet's scores are 0 to 1).
        min_face: faces smaller than this (pixels, the box's larger side, in the image given)
            are not reported; smaller values search small faces at a finer scale.
        rotations: the angles (degrees) of the extra passes that find tilted faces; () for none.
        model: the model's bytes (default: the shipped file, checked against its sha256).
    """

    name = NAME
    landmarks = True

    def __init__(self, threshold: float = 0.7, min_face: float = 16, rotations: Sequence[float] = (40, -40),
                 model: bytes | None = None) -> None:
        import cv2

        self.threshold, self.min_face, self.rotations = threshold, min_face, tuple(rotations)
        self.description = f"{NAME} (OpenCV {cv2.__version__} FaceDetectorYN)"
        buffer = np.frombuffer(model_bytes() if model is None else model, np.uint8)
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # OpenCV 5 warns of its DNN targets
        try:
            self._net: Any = cv2.FaceDetectorYN.create("onnx", buffer, np.empty(0, np.uint8), (INPUT_SIDE, INPUT_SIDE),
                                                      threshold, NMS_IOU, 5000)
        finally:
            cv2.utils.logging.setLogLevel(level)

    def passes(self, width: int, height: int) -> list[Pass]:
        """The searches of a `width` x `height` image (module docstring)."""
        s = first_scale(width, height, self.min_face)
        out = [scaled(width, height, s)]
        fine = fine_scale(width, height, self.min_face)
        if fine is not None:  # for the faces too small for the first pass (it finds larger ones wrongly)
            out.append(scaled(width, height, fine, max_face=1.5 * SEEN / s))
        r = rotated_scale(width, height, self.min_face)
        return out + [rotated(width, height, a, r) for a in self.rotations]

    def __call__(self, image: np.ndarray, bgr: bool = False) -> list[Detection]:
        bgr_image = as_bgr(image, bgr)
        height, width = bgr_image.shape[:2]
        return self.search(bgr_image, self.passes(width, height))

    def search(self, bgr_image: np.ndarray, passes: Sequence[Pass], refine: bool = True) -> list[Detection]:
        """The faces found by `passes` of a BGR image, merged, each one refined (`upright`) if `refine`."""
        found = merge((d for p in passes for d in self.run(bgr_image, p)), self.min_face)
        if not refine:
            return found
        return [face for face in (self.upright(bgr_image, d) for d in found) if face is not None]

    def region(self, bgr_image: np.ndarray, face: Detection, degrees: float) -> Detection | None:
        """`face` found again in the region around it, turned clockwise by `degrees` (to upright a
        face tilted by that much) and scaled to REGION_FACE pixels; None where it is not found."""
        side = round(REGION * REGION_FACE)
        p = around(face.centre, -degrees, REGION_FACE / face.size, (side, side))
        near = [d for d in self.run(bgr_image, p) if same_face(d, face)]
        if not near:
            return None
        best = max(near, key=lambda d: d.score or 0.0)
        return Detection(best.box, best.score, best.landmarks, rotation=degrees)

    def upright(self, bgr_image: np.ndarray, face: Detection) -> Detection | None:
        """`face` with its tilt measured by YuNet's score and its box and landmarks found where it
        is upright (module docstring); None where no region view finds it again.

        The score is taken at the estimated tilt and REFINE_STEP degrees either side, moving
        towards the higher score while an end is highest (at most MAX_MOVES times); the tilt is
        the peak of the parabola fitted (least squares) to the scores at the highest one's angle
        and FIT_ANGLES either side."""
        views: dict[float, Detection | None] = {}

        def score(angle: float) -> float:
            if angle not in views:
                views[angle] = self.region(bgr_image, face, angle)
            view = views[angle]
            return -1.0 if view is None else view.score or 0.0

        centre = face.tilt or 0.0
        for _ in range(MAX_MOVES + 1):
            s = [score(centre + k * REFINE_STEP) for k in (-1, 0, 1)]
            if s[1] >= max(s[0], s[2]) or max(s) < 0:
                break
            centre += REFINE_STEP if s[2] > s[0] else -REFINE_STEP
        if max(s) < 0:
            return None if all(v is None for v in views.values()) else face
        offsets = np.array([0.0, *FIT_ANGLES, *(-a for a in FIT_ANGLES)])
        scores = np.array([score(centre + a) for a in offsets])
        seen = scores >= 0
        if seen.sum() >= 3:
            a, b, _ = np.polyfit(offsets[seen], scores[seen], 2)
            if a < 0:
                centre += float(np.clip(-b / (2 * a), offsets.min(), offsets.max()))
        final = self.region(bgr_image, face, centre) or max((v for v in views.values() if v is not None),
                                                           key=lambda v: v.score or 0.0)
        return Detection(final.box, face.score, final.landmarks, rotation=centre)

    def run(self, bgr_image: np.ndarray, p: Pass) -> list[Detection]:
        """One pass: warp, detect, map the finds back to the image."""
        import cv2

        height, width = bgr_image.shape[:2]
        m = p.matrix
        if np.array_equal(m, [[1, 0, 0], [0, 1, 0]]) and p.size == (width, height):
            canvas = bgr_image
        elif m[0, 1] == 0 and m[1, 0] == 0 and m[0, 2] == 0 and m[1, 2] == 0:
            shrink = p.size[0] < width
            canvas = cv2.resize(bgr_image, p.size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        else:
            flags = cv2.INTER_AREA if p.scale < 1 else cv2.INTER_LINEAR
            canvas = cv2.warpAffine(bgr_image, m, p.size, flags=flags, borderMode=cv2.BORDER_CONSTANT)
        self._net.setInputSize(p.size)
        _, rows = self._net.detect(canvas)
        if rows is None:
            return []
        back = inverse(m)
        found = []
        for row in rows.astype(np.float64):
            x, y, w, h = row[:4] / 1.0
            cx, cy = back @ np.array([x + w / 2, y + h / 2, 1.0])
            w, h = w / p.scale, h / p.scale
            landmarks = row[4:14].reshape(5, 2) @ back[:, :2].T + back[:, 2]
            if max(w, h) <= p.max_face:
                found.append(Detection(Box(round(cx - w / 2), round(cy - h / 2), round(w), round(h)), float(row[14]),
                                       landmarks.astype(np.float32)))
        return found


def inverse(m: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine map."""
    a = np.linalg.inv(m[:, :2])
    return np.hstack([a, -(a @ m[:, 2:])])


def as_bgr(image: np.ndarray, bgr: bool) -> np.ndarray:
    """`image` as a contiguous BGR uint8 array (grey images given as H x W are accepted)."""
    import cv2

    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image if bgr else image[..., ::-1])
