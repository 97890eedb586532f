"""Checks of argument values, shared by the library's API and the command line (standard
library only). Each error names the argument, what it got and what it expects: TypeError for a
value of the wrong type, ValueError for one out of range."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any


def got(value: Any) -> str:
    """How an error message shows the value it got: its repr, and its type unless a number."""
    plain = isinstance(value, (int, float)) and not isinstance(value, bool)
    return repr(value) if plain else f"{value!r} ({type(value).__name__})"


@dataclass(frozen=True)
class Range:
    """The values an argument accepts: an int, or a finite float, within [low, high]
    (`low_open`: strictly above low)."""

    low: float | None = None
    high: float | None = None
    integer: bool = False
    low_open: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        show = (lambda v: str(int(v))) if self.integer else (lambda v: f"{v:g}")
        low = None if self.low is None else f"{'>' if self.low_open else '>='} {show(self.low)}"
        high = None if self.high is None else f"<= {show(self.high)}"
        if low and high and not self.low_open:
            return f"{kind} from {show(self.low)} to {show(self.high)}"
        return " ".join([kind, " and ".join(b for b in (low, high) if b)]).strip()

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def check(self, name: str, value: Any) -> Any:
        """`value` as an int or float, or TypeError/ValueError naming `name`."""
        number = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, number):
            raise TypeError(f"{name}: expected {self.describe()}, got {got(value)}")
        value = int(value) if self.integer else float(value)
        if not (self.integer or math.isfinite(value)) or not self.contains(value):
            raise ValueError(f"{name}: expected {self.describe()}, got {got(value)}")
        return value

    def parse(self, text: str) -> Any:
        """The value written in `text` (command-line form), or ValueError saying what is expected."""
        try:
            value = int(text) if self.integer else float(text)
        except ValueError:
            value = None
        if value is None or not (self.integer or math.isfinite(value)) or not self.contains(value):
            raise ValueError(f"expected {self.describe()}, got {text!r}")
        return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected one of {', '.join(choices)}, got {got(value)}")
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def check_names(name: str, value: Any) -> list[str]:
    """A list of distinct, non-empty class names."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) \
            or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name}: expected a list of class names, got {got(value)}")
    names = [v.strip() for v in value]
    if not names or not all(names):
        raise ValueError(f"{name}: expected non-empty class names, got {list(value)!r}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{name}: class names must be distinct; repeated: {', '.join(repeated)}")
    return names


# Limits shared by several commands and their library functions.
IMAGE_SIZE = Range(1, 1024, integer=True)  # images are resized to this; the model sees 112x112 of any
BATCH_SIZE = Range(1, integer=True)
MIN_OPSET = 18  # the oldest ONNX opset that export_onnx (and export --opset) accepts
# A model's outputs: 7 or 8 for the paper's datasets, any other count for other class sets
# (train --classes); one class is no classifier (softmax would answer it for everything).
NUM_CLASSES = Range(2, 10_000, integer=True)
CROP_MARGIN = Range(0, 10)  # face crop margin per side, a fraction of the face box
FRAME_STEP = Range(1, integer=True)  # predict classifies every N-th frame of a video
FRAME_COUNT = Range(1, integer=True)  # predict --max-frames
DURATION = Range(0, low_open=True)  # predict --duration, seconds
CAMERA_INDEX = Range(0, integer=True)  # predict --camera
DETECT_THRESHOLD = Range(0, 1, low_open=True)  # the lowest face detector score kept
MIN_FACE = Range(1, 10_000, integer=True)  # pixels: smaller faces are not reported
THREADS = Range(1, 1024, integer=True)  # CPU threads for torch


def check_fits(name: str, value: int, per_item: int, memory: int, what: str) -> int:
    """`value` items of at least `per_item` bytes each fit in `memory` bytes; ValueError naming
    `name` (and the largest count that could fit) otherwise. `what`: what one item is."""
    limit = max(1, memory // max(per_item, 1))
    if value > limit:
        raise ValueError(f"{name} {value}: more than the memory can hold ({what} needs at least "
                         f"{per_item / 2 ** 20:.1f} MiB, and there are {memory / 2 ** 30:.1f} GiB): "
                         f"expected at most {limit}")
    return value
