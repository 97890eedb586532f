"""Videos -> sampled frames -> faces -> class probabilities, for `poster-fast predict`.

A video is read with OpenCV (cv2.VideoCapture, imported only when a video is read). Frames
0, N, 2N, ... (`every` = N) are decoded; their faces are found and cropped as a photo's are
(crops.image_crops), and the crops join the batches of the photos' crops (crops.FaceBatches),
so that faces are batched across frames and files. A frame is dropped once its faces are
cropped: memory is bounded by the batch of crops, as for photos. The result is a timeline, one
FrameResult per processed frame."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

from ..data.transforms import ToNormalizedTensor
from ..errors import DataError
from ..faces import FaceDetector
from .crops import Face, PhotoResult, image_crops, no_face

NEEDS_OPENCV = "reading a video needs OpenCV (scikit-image reads photos only): pip install opencv-python-headless"


@dataclass(kw_only=True)
class FrameResult(PhotoResult):
    """One processed frame; `file` is the video's, `error` only a non-finite model output."""
    index: int  # the frame's position in the video, from 0
    time: float | None  # seconds, index / fps (None where the video gives no frame rate)
    video: VideoResult = field(repr=False, compare=False)


@dataclass
class VideoResult:
    file: str
    error: str | None = None
    every: int = 1  # frames 0, every, 2*every, ... are processed
    fps: float | None = None
    size: tuple[int, int] | None = None  # width, height
    frames_read: int = 0  # processed or skipped
    frames: list[FrameResult] = field(default_factory=list)  # the processed frames, in order

    @property
    def classified(self) -> int:
        return sum(f.classified for f in self.frames)

    @property
    def faces(self) -> list[Face]:
        return [face for frame in self.frames for face in frame.faces]


def open_video(path: str) -> Any:
    """An opened cv2.VideoCapture; DataError when OpenCV is missing or cannot open the file."""
    try:
        import cv2
    except ImportError:
        raise DataError(NEEDS_OPENCV) from None
    if not hasattr(cv2, "VideoCapture"):
        raise DataError(NEEDS_OPENCV)
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        capture.release()
        raise DataError(f"cannot open video {path}: not a video OpenCV can read")
    return capture


def frame_rate(capture: Any) -> float | None:
    import cv2

    fps = float(capture.get(cv2.CAP_PROP_FPS))
    return fps if math.isfinite(fps) and fps > 0 else None


def read_frames(video: VideoResult) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB array) of frames 0, every, 2*every, ...; the frames between are grabbed, not
    converted. Records the frame rate, size and frames read in `video`; raises DataError when
    the file cannot be opened or a frame cannot be decoded."""
    capture = open_video(video.file)
    try:
        video.fps = frame_rate(capture)
        while capture.grab():
            index, video.frames_read = video.frames_read, video.frames_read + 1
            if index % video.every == 0:
                yield index, retrieve_rgb(capture, video, index)  # held by no local while suspended
    finally:
        capture.release()
    if not video.frames_read:
        raise DataError(f"no frame of video {video.file} can be decoded")


def retrieve_rgb(capture: Any, video: VideoResult, index: int) -> np.ndarray:
    """The frame just grabbed, decoded, as RGB; records the video's size."""
    import cv2

    ok, bgr = capture.retrieve()
    if not ok:
        raise DataError(f"frame {index} of {video.file} cannot be decoded")
    video.size = (bgr.shape[1], bgr.shape[0])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def frame_crops(video: VideoResult, detector: FaceDetector | None, margin: float,
                to_tensor: ToNormalizedTensor) -> Iterator[tuple[FrameResult, list[tuple[Face, torch.Tensor]]]]:
    """Each processed frame of `video` with its face crops (none where it has no face),
    appended to video.frames. A video that cannot be read, or whose frames have no face, gets
    an error; the frames read before a decoding error keep their results."""
    try:
        for index, rgb in read_frames(video):
            frame = FrameResult(video.file, index=index, video=video,
                                time=None if video.fps is None else round(index / video.fps, 6))
            crops = image_crops(Image.fromarray(rgb), detector, margin, to_tensor)
            del rgb
            frame.faces += [face for face, _ in crops]
            video.frames.append(frame)
            yield frame, crops
    except DataError as err:
        video.error = str(err)
        return
    if detector is not None and not any(frame.faces for frame in video.frames):
        video.error = f"{no_face(detector)}, in any of the {len(video.frames)} frames processed"
