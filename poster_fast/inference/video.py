"""Videos, cameras and streams -> frames, for `poster-fast predict`.

Every source is read with OpenCV (cv2.VideoCapture, imported only when one is read): a video file,
a camera (`camera:N`, from `--camera N`) or a stream URL (anything with a scheme, such as
rtsp://..., that VideoCapture opens). Of a file, frames 0, N, 2N, ... (`every` = N) are decoded;
the frames between are grabbed, not decoded. Cameras and streams are live: a thread reads them
continuously and predict takes the newest frame each time it is ready for one (at least `every`
frames after the last one taken), so that it never falls behind the source; the frames it skips
are counted, not kept. `max_frames` and `duration` end any source early. The result is a timeline,
one FrameResult per processed frame.
"""
from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ..errors import DataError
from .crops import Face, PhotoResult

NEEDS_OPENCV = "reading a video needs OpenCV (scikit-image reads photos only): pip install opencv-python-headless"
STREAM = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
CAMERA = "camera:"


def camera_source(index: int) -> str:
    return f"{CAMERA}{index}"


def is_live(source: str) -> bool:
    """A camera (camera:N) or a stream URL."""
    return source.startswith(CAMERA) or bool(STREAM.match(source))


@dataclass(kw_only=True)
class FrameResult(PhotoResult):
    """One processed frame; `file` is the source's, `error` only a non-finite model output."""
    index: int  # the frame's position in the source, from 0
    time: float | None  # seconds: index / fps for files (None where the file gives no frame rate),
    #                     since the first frame for cameras and streams
    video: VideoResult = field(repr=False, compare=False)
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)  # a live frame (BGR), kept
    #                     until it is delivered: it cannot be read again


@dataclass
class VideoResult:
    file: str  # the path, camera:N or the URL
    error: str | None = None
    every: int = 1  # files: frames 0, every, 2*every, ... are processed
    fps: float | None = None
    size: tuple[int, int] | None = None  # width, height
    frames_read: int = 0  # processed or skipped
    frames: list[FrameResult] = field(default_factory=list)  # the processed frames, in order
    live: bool = False

    @property
    def classified(self) -> int:
        return sum(f.classified for f in self.frames)

    @property
    def faces(self) -> list[Face]:
        return [face for frame in self.frames for face in frame.faces]


def open_capture(source: str) -> Any:
    """An opened cv2.VideoCapture of a file, a stream URL or camera:N; DataError when OpenCV is
    missing or cannot open it."""
    try:
        import cv2
    except ImportError:
        raise DataError(NEEDS_OPENCV) from None
    if not hasattr(cv2, "VideoCapture"):
        raise DataError(NEEDS_OPENCV)
    camera = source.startswith(CAMERA)
    capture = cv2.VideoCapture(int(source[len(CAMERA):]) if camera else source)
    if not capture.isOpened():
        capture.release()
        what = "camera" if camera else "stream" if STREAM.match(source) else "video"
        raise DataError(f"cannot open {what} {source}: " +
                        ("no such camera, or it is busy" if camera else f"not a {what} OpenCV can read"))
    return capture


def frame_rate(capture: Any) -> float | None:
    import cv2

    fps = float(capture.get(cv2.CAP_PROP_FPS))
    return fps if math.isfinite(fps) and fps > 0 else None


@dataclass(frozen=True)
class Limits:
    """When to stop reading a source: after `max_frames` processed frames, or `duration` seconds
    (of the video's time for files with a frame rate, else since the first frame)."""
    max_frames: int | None = None
    duration: float | None = None

    def reached(self, processed: int, seconds: float | None) -> bool:
        return ((self.max_frames is not None and processed >= self.max_frames)
                or (self.duration is not None and seconds is not None and seconds >= self.duration))


def read_frames(video: VideoResult, limits: Limits = Limits()) -> Iterator[tuple[int, float | None, np.ndarray]]:
    """(index, time, BGR array) of the frames to process. Records the frame rate, size and frames
    read in `video`; raises DataError when the source cannot be opened or a frame cannot be decoded."""
    capture = open_capture(video.file)
    video.fps = frame_rate(capture)
    if video.live:
        yield from _live(LiveReader(capture, video), video, limits)  # the reader releases the capture
    else:
        try:
            yield from _file(capture, video, limits)
        finally:
            capture.release()
    if not video.frames_read:
        raise DataError(f"no frame of {video.file} can be decoded")


def _file(capture: Any, video: VideoResult, limits: Limits) -> Iterator[tuple[int, float | None, np.ndarray]]:
    start, processed = time.monotonic(), 0
    while capture.grab():
        index, video.frames_read = video.frames_read, video.frames_read + 1
        if index % video.every:
            continue
        at = None if video.fps is None else round(index / video.fps, 6)
        if limits.reached(processed, at if at is not None else time.monotonic() - start):
            return
        ok, bgr = capture.retrieve()
        if not ok:
            raise DataError(f"frame {index} of {video.file} cannot be decoded")
        video.size = (bgr.shape[1], bgr.shape[0])
        processed += 1
        yield index, at, bgr


def _live(reader: LiveReader, video: VideoResult, limits: Limits) -> Iterator[tuple[int, float | None, np.ndarray]]:
    try:
        processed, last = 0, -video.every
        while not limits.reached(processed, reader.seconds()):
            got = reader.newest(after=last + video.every - 1)
            if got is None:
                return
            last, at, bgr = got
            video.size = (bgr.shape[1], bgr.shape[0])
            processed += 1
            yield last, round(at, 6), bgr
    finally:
        reader.stop()


class LiveReader:
    """Reads a live capture in a daemon thread, keeping only the newest frame (index, seconds since
    the first frame, BGR array); counts every frame read in video.frames_read. The thread releases
    the capture when the source ends or `stop` is called (a read in progress first returns)."""

    def __init__(self, capture: Any, video: VideoResult) -> None:
        self.capture, self.video = capture, video
        self.frame: tuple[int, float, np.ndarray] | None = None
        self.start: float | None = None
        self.ended = False
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, name="poster-fast-live", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while not self.ended:
                ok, bgr = self.capture.read()
                if not ok:
                    break
                with self.changed:
                    now = time.monotonic()
                    self.start = now if self.start is None else self.start
                    self.frame = (self.video.frames_read, now - self.start, bgr)
                    self.video.frames_read += 1
                    self.changed.notify_all()
        finally:
            self.capture.release()
            with self.changed:
                self.ended = True
                self.changed.notify_all()

    def seconds(self) -> float | None:
        return None if self.start is None else time.monotonic() - self.start

    def newest(self, after: int) -> tuple[int, float, np.ndarray] | None:
        """The newest frame whose index is above `after`, waiting for it; None once the source has
        ended without one."""
        with self.changed:
            while self.frame is None or self.frame[0] <= after:
                if self.ended:
                    return None
                self.changed.wait(timeout=0.1)
            frame, self.frame = self.frame, None
            return frame

    def stop(self) -> None:
        with self.changed:
            self.ended = True
        self.thread.join(timeout=1)
