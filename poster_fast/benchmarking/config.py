"""What a bench run measures and how (no torch: the command imports it for its option choices;
model.LEVELS comes from the model package's light face)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import model

if TYPE_CHECKING:
    import torch

SCHEMA = 3  # version of the JSON layout (docs/benchmarks.md)
LEVELS = dict(enumerate(model.LEVELS, start=1))  # POSTER's levels by number, as --levels and the rows name them
DTYPE_NAMES = ("fp32", "bf16", "fp16")
SECTIONS = ("budget", "ops", "infer", "train", "latency", "roofline", "profile")
MODEL_SECTIONS = ("infer", "train", "latency")
CLOCKS = ("wall", "cpu")  # how the roofline and profile sections time: wall clock or process CPU time
# The bench's own op baselines: "reference" is the eager formula (also a registered backend),
# "sdpa_mask" SDPA with the gathered bias as mask, "flex" compiled FlexAttention. The fused
# backends come from the op registry and are timed first; flex, whose compiles are slow, last.
BASELINES = ("reference", "sdpa_mask", "flex")
TIMED_LAST = ("flex",)


@dataclass
class Config:
    device: "torch.device"
    batch: int
    model_batch: int
    dtypes: list[str]
    levels: list[int]
    backends: list[str]
    requested: set[str]  # named with --backends: slow CPU paths run only then
    warmup: int
    iters: int
    model_warmup: int
    model_iters: int
    sections: list[str]
    quick: bool
    threads: int
    time_limit: float | None = None  # seconds; rows not started by then are recorded as cut
    model_backend: str | None = None  # the model rows' backend; None: the fastest op backend
    roofline_dtypes: list[str] | None = None  # the roofline and profile sections' (None: fp32)
    clock: str = "wall"  # one of CLOCKS
