"""Face detection on the test images of tests/face_images.py (built from scikit-image's and OpenCV's
own data: upright, tilted up to 45 degrees, faces of 22-32 px, grey, two faces, no face), per
detector: recall per kind, false faces, faces without landmarks, and milliseconds per image.

Detectors: the shipped YuNet-s through poster_fast.faces.YuNet (its whole search: the passes at
two scales and +-40 degrees), the same with other model files given by --model (YuNet-n, say), and
the Haar cascade fallback (poster_fast.faces.cascade.Cascade). Times are the median over
--repeats runs of the whole set, one OpenCV thread; the 640x640 row times one image of that size.

    python benchmarks/face_detection.py [--model NAME=PATH ...] [--threshold 0.7] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from poster_fast.faces import YuNet
from poster_fast.faces.cascade import Cascade

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from face_images import KINDS, face_images, score  # noqa: E402


def timed(detect: Callable[[np.ndarray], list], images: list[np.ndarray], repeats: int) -> float:
    """Median seconds of one pass over `images`."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for image in images:
            detect(image)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="another YuNet ONNX file to measure beside the shipped one")
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    cases = face_images()
    detectors: dict[str, Callable[[np.ndarray], list]] = {"yunet-s (shipped)": YuNet(args.threshold)}
    for spec in args.model:
        name, path = spec.split("=", 1)
        detectors[name] = YuNet(args.threshold, model=Path(path).read_bytes())
    detectors["haar cascade"] = Cascade()
    square = cv2.resize(cases[0].image, (640, 640))
    print(f"OpenCV {cv2.__version__}, 1 thread; {len(cases)} images, "
          f"{sum(len(c.faces) for c in cases)} faces; threshold {args.threshold}")
    header = ["detector", *(f"{k} found" for k in KINDS[:-1]), "recall", "false", "no landmarks", "ms/image",
              "ms 640x640"]
    print(" | ".join(header))
    for name, detector in detectors.items():
        def detect(image: np.ndarray) -> list:
            return [((d.box.x, d.box.y, d.box.w, d.box.h), d.landmarks) for d in detector(image)]

        s = score(cases, detect)
        per_image = timed(detector, [c.image for c in cases], args.repeats) / len(cases)
        one = timed(detector, [square], max(3, args.repeats))
        cells = [f"{s[k].found}/{s[k].faces}" for k in KINDS[:-1]]
        print(" | ".join([name, *cells, f"{s['all'].recall:.3f}", str(s["all"].false),
                          str(s["all"].without_landmarks), f"{1000 * per_image:.1f}", f"{1000 * one:.1f}"]))
        if s["all"].missed or s["all"].false_in:
            print(f"    missed: {', '.join(s['all'].missed) or '-'}; false faces in: "
                  f"{', '.join(s['all'].false_in) or '-'}")


if __name__ == "__main__":
    main()
