"""predict's throughput on a video against the same frames as photos (one process, one model).

The video is tests/test_video.py's: scikit-image's astronaut twice side by side (1024x512, two
faces), shifted 4 pixels per frame, mp4v. The photos are the frames OpenCV decodes from it,
saved as PNG: with --every N, the frames 0, N, 2N, ... Each configuration runs `--repeats` times,
interleaved, through predict_files with face detection (the model has random weights, as with
`--allow-random`); the median time is reported.

    python benchmarks/video_throughput.py [--frames 20] [--every 1 5] [--repeats 2] [--image-size 224]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from skimage import data

from poster_fast.faces import FaceDetector
from poster_fast.inference.classifier import random_classifier
from poster_fast.inference.predict import predict_files


def write_clip(folder: Path, frames: int) -> Path:
    face = data.astronaut()
    two = np.concatenate([face, face[:, ::-1]], axis=1)
    path = folder / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8.0, (two.shape[1], two.shape[0]))
    for i in range(frames):
        writer.write(np.ascontiguousarray(np.roll(two, 4 * i, axis=1)[..., ::-1]))
    writer.release()
    capture = cv2.VideoCapture(str(path))
    for i in range(frames):
        ok, bgr = capture.read()
        Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).save(folder / f"frame{i:03d}.png")
    capture.release()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--every", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    classifier = random_classifier(device="cpu", precision="fp32")
    detector = FaceDetector()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {classifier.describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip = write_clip(folder, args.frames)
        runs = {}
        for every in args.every:
            photos = [folder / f"frame{i:03d}.png" for i in range(0, args.frames, every)]
            runs[f"video --every {every}"] = ([clip], every, len(photos))
            runs[f"photos (frames 0,{every},...)"] = (photos, 1, len(photos))
        times: dict[str, list[float]] = {name: [] for name in runs}
        faces: dict[str, int] = {}
        predict_files(runs[next(iter(runs))][0], classifier, detector, progress=False)  # warm-up
        for _ in range(args.repeats):
            for name, (inputs, every, _) in runs.items():
                start = time.perf_counter()
                results = predict_files(inputs, classifier, detector, image_size=args.image_size,
                                        batch_size=args.batch_size, every=every, progress=False)
                times[name].append(time.perf_counter() - start)
                faces[name] = sum(r.classified for r in results)
        print(f"{'input':28} {'frames':>6} {'faces':>5} {'median s':>9} {'frames/s':>9} {'faces/s':>8}  runs (s)")
        for name, (_, _, frames) in runs.items():
            t = statistics.median(times[name])
            print(f"{name:28} {frames:6d} {faces[name]:5d} {t:9.2f} {frames / t:9.3f} {faces[name] / t:8.3f}  "
                  + " ".join(f"{x:.2f}" for x in times[name]))


if __name__ == "__main__":
    main()
