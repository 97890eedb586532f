"""Photos, videos, cameras and streams -> faces -> class probabilities, for `poster-fast predict`:
each photo and each processed frame goes through the Recognizer (recognizer.Recognizer.crops, then
.classify), so that the crops of consecutive photos and frames are classified together in batches
(while the next ones are read, detected and cropped in a background thread where Recognizer.overlap
is on).

Memory is bounded by the batch of face crops: a decoded photo or file frame is dropped as soon as
its faces are cropped (whoever needs it later, such as outputs.Annotator, reads the file again); a
live frame, which cannot be read again, is kept until its faces are classified.

Ctrl-C stops the reading; `Interrupted` then carries the results of every photo and frame
classified so far (those still waiting for their batch are left out), for the outputs."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

import numpy as np

from ..checks import DURATION, FRAME_COUNT, FRAME_STEP
from ..data.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_video, iter_images, load_image
from ..errors import DataError
from ..files import file_problem
from .crops import PhotoResult
from .recognizer import Crops, Recognizer
from .video import FrameResult, Limits, VideoResult, is_live, read_frames

# Called with each photo once all its faces are classified (with each processed frame of a
# video, a video.FrameResult, in order, whether it has faces or not).
OnClassified = Callable[[PhotoResult], None]
Result = Union[PhotoResult, VideoResult]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during predict_files; `results` holds what was classified before it."""

    def __init__(self, results: list[Result]) -> None:
        super().__init__()
        self.results = results


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """(path, error) per image or video: folders are searched recursively for image and video
    files (iter_images); a file reached twice (named twice, or through a link) is listed once.
    What is not a regular file (a FIFO, a socket, a device, a broken link) gets an error saying
    what it is, and is never opened (files.file_problem). Cameras (camera:N) and stream URLs
    are listed as they are."""
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for item in map(str, inputs):
        if is_live(item):
            out.append((item, None))
            continue
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


def no_face(recognizer: Recognizer) -> str:
    return f"no face found by the {recognizer.detector.name} detector (aligned crops: --no-detect)"


def photo_items(photo: PhotoResult, recognizer: Recognizer) -> Iterator[tuple[PhotoResult, Crops]]:
    """Read the photo and crop its faces; records the faces found, or the error, in `photo`. The
    decoded photo is not kept."""
    try:
        crops = recognizer.crops(np.asarray(load_image(photo.file)), False)
    except DataError as err:
        photo.error = str(err)
        return
    if not crops:
        photo.error = no_face(recognizer)  # (without a detector, the whole image is a crop)
        return
    photo.faces += [face for face, _ in crops]
    yield photo, crops


def frame_items(video: VideoResult, recognizer: Recognizer, limits: Limits) -> Iterator[tuple[FrameResult, Crops]]:
    """Each processed frame of `video` with its face crops (none where it has no face), appended to
    video.frames. A video that cannot be read, or whose frames have no face, gets an error; the
    frames read before a decoding error keep their results."""
    detector = recognizer.video_detector()
    try:
        for index, at, bgr in read_frames(video, limits):
            frame = FrameResult(video.file, index=index, time=at, video=video, pixels=bgr if video.live else None)
            crops = recognizer.crops(bgr, True, detector)
            del bgr
            frame.faces += [face for face, _ in crops]
            video.frames.append(frame)
            yield frame, crops
    except DataError as err:
        video.error = str(err)
        return
    if recognizer.detector is not None and not any(frame.faces for frame in video.frames):
        video.error = f"{no_face(recognizer)}, in any of the {len(video.frames)} frames processed"


def predict_files(inputs: Sequence[str | os.PathLike], recognizer: Recognizer, *, every: int = 1,
                  max_frames: int | None = None, duration: float | None = None,
                  on_classified: OnClassified | None = None, progress: bool = True) -> list[Result]:
    """Classify the expression of every face in photos, videos, cameras and streams.

    Args:
        inputs: image and video files, folders (searched recursively), cameras (video.camera_source:
            camera:N) and stream URLs.
        recognizer: finds, crops and classifies the faces (its detector, alignment, crop size and
            batch size apply).
        every: of a video file, classify frames 0, every, 2*every, ...; of a live source, frames at
            least `every` apart.
        max_frames, duration: stop each video or stream after this many processed frames, or
            seconds (video.Limits).
        on_classified: called with each photo (and each processed frame of a video), in order,
            once all its faces are classified.
        progress: show a progress bar on stderr.

    Returns:
        One result per image or video found, in order: a PhotoResult per image, a video.VideoResult
        per file with a video extension (data.images.VIDEO_EXTENSIONS), camera or stream. Files that
        cannot be used get an error instead of faces.

    Raises:
        TypeError, ValueError: an argument outside its limits (poster_fast.checks), naming it.
        Interrupted: Ctrl-C; it carries the results classified until then.
    """
    from tqdm import tqdm

    every = FRAME_STEP.check("every", every)
    limits = Limits(None if max_frames is None else FRAME_COUNT.check("max_frames", max_frames),
                    None if duration is None else DURATION.check("duration", duration))
    sources = collect_inputs(inputs)
    results: list[Result] = []
    pending: dict[int, PhotoResult] = {}  # photos and frames handed to the model, not yet delivered

    def items() -> Iterator[tuple[PhotoResult, Crops]]:
        for path, error in tqdm(sources, desc="predict", unit="file", disable=not progress or None, file=sys.stderr):
            if is_video(path) or is_live(path):
                video = VideoResult(path, error=error, every=every, live=is_live(path))
                results.append(video)
                found = () if error else frame_items(video, recognizer, limits)
            else:
                photo = PhotoResult(path, error=error)
                results.append(photo)
                found = () if error else photo_items(photo, recognizer)
            for item, crops in found:
                pending[id(item)] = item
                yield item, crops

    try:
        for done in recognizer.classify(items(), live=any(is_live(path) for path, _ in sources)):
            del pending[id(done)]
            if on_classified is not None:
                on_classified(done)
            if isinstance(done, FrameResult):
                done.pixels = None
    except KeyboardInterrupt:
        raise Interrupted(without(results, pending)) from None
    return results


def without(results: list[Result], pending: dict[int, PhotoResult]) -> list[Result]:
    """`results` less the photos and frames in `pending`."""
    for r in results:
        if isinstance(r, VideoResult):
            r.frames = [f for f in r.frames if id(f) not in pending]
    return [r for r in results if id(r) not in pending]
