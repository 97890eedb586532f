"""Every setting of a training run, with the paper's defaults (standard library only: the
command line takes its defaults and choices from here)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

OPTIMIZERS = ("sam-adam", "adam", "sam-adamw", "adamw")
SAMPLERS = ("auto", "shuffle", "balanced")
AMP_MODES = ("auto", "bf16", "off")


@dataclass
class TrainOptions:
    """`train(options)`'s input; None means "the dataset's recipe" (lr) or "derived" (the rest)."""

    data: str  # dataset root holding train/ and valid/ class folders
    dataset: str  # picks the recipe and the class names (data.labels.DATASETS)
    out: str | None = None  # output folder; default runs/<dataset>
    classes: list[str] | None = None  # names for the sorted class folders instead of the dataset's
    image_size: int = 224
    workers: int = min(4, os.cpu_count() or 1)
    device: str | None = None  # default: device.default_device
    amp: str = "auto"  # AMP_MODES; auto: bf16 autocast where bf16 is native (device.native_bf16)
    attn_backend: str = "auto"
    trusted: bool = False  # unpickle backbone files that hold Python objects
    epochs: int = 200
    batch_size: int = 144  # global, split across processes
    lr: float | None = None
    weight_decay: float = 1e-4
    optimizer: str = "sam-adam"  # OPTIMIZERS
    rho: float = 0.05  # SAM neighbourhood size
    gamma: float = 0.98  # ExponentialLR factor per epoch
    plain: bool = False  # no optimize-style speed-ups
    sampler: str = "auto"  # SAMPLERS; auto: the recipe's
    val_split: str = "valid"
    test_split: str | None = None  # default: test if DATA/test exists, else val_split
    ir50: str | None = None  # the authors' pretrained ir50.pth
    landmark: str | None = None  # the authors' mobilefacenet_model_best.pth.tar
    resume: str | None = None  # a last.pt, or "auto" for OUT/last.pt
    max_steps: int | None = None  # at most this many steps per epoch (smoke tests)
    seed: int = 0

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"runs/{self.dataset}")

    @property
    def resume_path(self) -> Path | None:
        if not self.resume:
            return None
        return self.out_dir / "last.pt" if self.resume == "auto" else Path(self.resume)
