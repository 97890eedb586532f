"""predict's end-to-end speed on a video against the model alone, in one run.

The video: a 640x480 one-face clip written here (mp4v) from scikit-image's astronaut, its face
about 100 px, drifting 2 pixels per frame. The model has random weights (as `--allow-random`),
at `--precision` (auto: what predict picks on this machine).

Rows, each the median of `--repeats` rounds (a round runs every row once, in turn, so that a slow
spell of a shared machine falls on all of them):
- end to end: predict_files on the clip (decode, detect, align and the model; the next frames read,
  detected and cropped in a background thread while the model runs where Recognizer.overlap is on,
  as it is by default on a GPU or where the CPU has cores torch's threads leave free), frames/s;
  and, in the same run, with the thread the other way (`overlap on` / `overlap off`);
- its split, each stage alone over the same frames: decode (OpenCV), detect (the video detector,
  faces.Tracking), align (aligned crops, normalised), model (the crops through the model at
  `--batch-size`): the model alone, on the same number of crops at the same batch;
- end to end / model alone, the ratio the issue targets (>= 0.6): the median of the rounds' ratios;
- detect's cost by kind of frame (median): key frames (a photo's whole search), scan frames (a
  region pass per followed face and YuNet's first pass) and the others (region passes only).

    python benchmarks/video_throughput.py [--frames 48] [--batch-size 8] [--repeats 3] [--precision auto]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from skimage import data

from poster_fast.faces import load_detector
from poster_fast.inference.classifier import random_classifier
from poster_fast.inference.predict import predict_files
from poster_fast.inference.recognizer import Recognizer
from poster_fast.inference.video import VideoResult, read_frames


def write_clip(path: Path, frames: int) -> None:
    face = data.astronaut()[:400, 40:480]  # the face about 100 px
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (640, 480))
    for i in range(frames):
        canvas = np.full((480, 640, 3), 90, np.uint8)
        x = 40 + 2 * i % 160
        canvas[40:440, x:x + 440] = face
        writer.write(np.ascontiguousarray(canvas[..., ::-1]))
    writer.release()


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


class Given:
    """A detector that returns the detections found before (one frame's list per call, in turn)."""
    name, landmarks = "given", True

    def __init__(self, found: list[list]) -> None:
        self.found, self.next = found, 0

    def __call__(self, image: np.ndarray, bgr: bool = False) -> list:
        self.next += 1
        return self.found[self.next - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    torch.manual_seed(0)
    classifier = random_classifier(device="cpu", precision=args.precision)
    rec = Recognizer(classifier, load_detector(), batch_size=args.batch_size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OpenCV {cv2.__version__}; {rec.describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_clip(clip, args.frames)
        frames = [bgr for _, _, bgr in read_frames(VideoResult(str(clip)))]
        found: list[list] = []

        kinds: dict[str, list[float]] = {"key frame": [], "scan frame": [], "region only": []}

        def detect() -> None:
            tracking = rec.video_detector()
            found.clear()
            for bgr in frames:
                start = time.perf_counter()
                found.append(tracking(bgr, True))
                kinds[tracking.searched].append(time.perf_counter() - start)

        crops: list[torch.Tensor] = []

        def align() -> None:
            given = Given(found)
            crops[:] = [t for bgr in frames for _, t in rec.crops(bgr, True, given)]

        def model() -> None:
            for i in range(0, len(crops), args.batch_size):
                classifier.probabilities(torch.stack(crops[i:i + args.batch_size]))

        def end_to_end(overlap: bool) -> Callable[[], None]:
            def run() -> None:
                rec.overlap = overlap
                (video,) = predict_files([clip], rec, progress=False)
                assert video.error is None and video.classified == len(crops), video.error
            return run

        chosen = rec.overlap
        rows = {"decode": lambda: list(read_frames(VideoResult(str(clip)))), "detect": detect, "align": align,
                "model alone": model, "end to end": end_to_end(chosen),
                f"overlap {'off' if chosen else 'on'}": end_to_end(not chosen)}
        detect(), align(), model()  # warm-up
        rounds = [{name: timed(work) for name, work in rows.items()} for _ in range(args.repeats)]
        times = {name: statistics.median(r[name] for r in rounds) for name in rows}
        ratios = [r["model alone"] / r["end to end"] for r in rounds]
        n = len(frames)
        print(f"{n} frames of 640x480, {len(crops)} faces, batch {args.batch_size}, median of {args.repeats}; "
              f"end to end with overlap {'on' if chosen else 'off'} (Recognizer's default here)")
        print(f"{'stage':12} {'ms/frame':>9} {'frames/s':>9}")
        for name, t in times.items():
            print(f"{name:12} {1000 * t / n:9.1f} {n / t:9.1f}")
        print("detect, by kind of frame (faces.Tracking.searched): " + ", ".join(
            f"{kind} {1000 * statistics.median(t):.1f} ms" for kind, t in kinds.items() if t))
        each = ", ".join(f"{x:.2f}" for x in ratios)
        print(f"end to end / model alone: {statistics.median(ratios):.2f} (rounds: {each})")


if __name__ == "__main__":
    main()
