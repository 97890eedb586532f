"""Every setting of a training run, with the paper's defaults, their limits, and what `--resume`
does with each (standard library only: the command line takes its defaults, choices and limits
from here)."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Collection, Mapping

from ..checks import BATCH_SIZE, IMAGE_SIZE, Range, check_choice, check_names
from ..data.labels import DATASETS
from ..errors import CheckpointError, UsageError

OPTIMIZERS = ("sam-adam", "adam", "sam-adamw", "adamw")
SAMPLERS = ("auto", "shuffle", "balanced")
AMP_MODES = ("auto", "bf16", "off")
EVAL_BATCH_SIZE = 64  # images per forward pass of `poster-fast evaluate`

LIMITS: dict[str, Range] = {
    "image_size": IMAGE_SIZE,
    "workers": Range(0, 256, integer=True),
    "epochs": Range(1, integer=True),
    "batch_size": BATCH_SIZE,
    "lr": Range(0, low_open=True),
    "weight_decay": Range(0),
    "rho": Range(0),  # 0: SAM without perturbation
    "gamma": Range(0, 1, low_open=True),  # ExponentialLR factor per epoch
    "max_steps": Range(1, integer=True),
    "seed": Range(0, 2 ** 32 - 1, integer=True),
    "save_every": Range(1, integer=True),
    "accum_steps": Range(1, 4096, integer=True),
}
OPTIONAL = ("lr", "max_steps", "save_every")  # None allowed: the recipe's, no limit, at epoch ends only
CHOICES: dict[str, tuple[str, ...]] = {"dataset": tuple(DATASETS), "amp": AMP_MODES, "optimizer": OPTIMIZERS,
                                       "sampler": SAMPLERS}

# What `--resume` does with an option given again with another value than the run's
# (docs/commands.md, "Train"). Refused: the run's identity (the class names are checked against last.pt's too).
# Runtime: how this session runs, applied silently. Ignored: the weights come from last.pt.
# Every other option is applied from where the run continues and logged; one not given again
# keeps the run's value (train(given=...)).
RESUME_REFUSED = ("dataset", "optimizer")
RESUME_RUNTIME = ("data", "out", "resume", "workers", "device", "amp", "attn_backend", "trusted",
                  "plain", "max_steps", "classes", "save_every", "accum_steps", "force")
RESUME_IGNORED = ("ir50", "landmark")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


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
    resume: str | None = None  # a last.pt, or "auto": OUT/last.pt if there is one, else a new run
    max_steps: int | None = None  # at most this many steps per epoch (smoke tests)
    seed: int = 0
    save_every: int | None = None  # also save last.pt every this many optimiser steps within an epoch
    accum_steps: int = 1  # micro-batches accumulated per optimiser step (the global batch is unchanged)
    sync_bn: bool = False  # SyncBatchNorm for the trainable BatchNorm layers under DDP
    force: bool = False  # replace a run already in out (training.rundir)

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"runs/{self.dataset}")

    @property
    def resume_path(self) -> Path | None:
        if not self.resume:
            return None
        return self.out_dir / "last.pt" if self.resume == "auto" else Path(self.resume)

    def resume_source(self) -> Path | None:
        """The training state this run continues: the file --resume names, or with `auto`
        OUT/last.pt when it exists; None: a new run. (The one decision about OUT's contents
        that training makes; CheckpointError if a named file does not exist.)"""
        path = self.resume_path
        if path is None or (self.resume == "auto" and not path.exists()):
            return None
        if not path.exists():
            raise CheckpointError(f"--resume: {path} does not exist")
        return path

    def check(self) -> "TrainOptions":
        """Every value within its limits (TypeError, or UsageError naming the option); returns
        the options with the recipe's learning rate filled in."""
        for name, limits in LIMITS.items():
            value = getattr(self, name)
            if value is not None or name not in OPTIONAL:
                try:
                    limits.check(flag(name), value)
                except ValueError as err:
                    raise UsageError(str(err)) from None
        for name, choices in CHOICES.items():
            try:
                check_choice(flag(name), getattr(self, name), choices)
            except ValueError as err:
                raise UsageError(str(err)) from None
        if self.classes is not None:
            try:
                check_names("--classes", self.classes)
            except ValueError as err:
                raise UsageError(str(err)) from None
        for name in ("val_split", "test_split"):
            split = getattr(self, name)
            if split is not None and (not isinstance(split, str) or split in ("", ".", "..")
                                      or "/" in split or os.sep in split):
                raise UsageError(f"{flag(name)} {split!r}: expected the name of a folder in --data")
        return self if self.lr is not None else replace(self, lr=DATASETS[self.dataset].lr)

    def record(self) -> dict[str, Any]:
        """The options as last.pt records them (what --resume compares with)."""
        return {k: v for k, v in asdict(self).items() if k not in ("resume", "force")}


def test_split(opts: TrainOptions) -> str:
    """The split of the final evaluation: --test-split, else test if DATA/test exists, else the val split."""
    if opts.test_split:
        return opts.test_split
    return "test" if (Path(opts.data) / "test").is_dir() and opts.val_split != "test" else opts.val_split


def resume_options(opts: TrainOptions, recorded: Mapping[str, Any], done: int, given: Collection[str] | None,
                   source: Path, finished_ok: bool = False) -> tuple[TrainOptions, dict[str, tuple[Any, Any]]]:
    """The options of a run continued from `source` (which finished epoch `done` and recorded
    `recorded`): options not in `given` (None: all are given) take the run's values; given
    ones that differ are refused (RESUME_REFUSED) or applied, and returned as the changes
    {name: (the run's value, the new one)} (run-time options are not listed). --epochs must
    exceed `done`, or with `finished_ok` (a state at an epoch's end, --resume auto) equal it."""
    changes: dict[str, tuple[Any, Any]] = {}
    for f in fields(TrainOptions):
        name = f.name
        if name not in recorded or name in RESUME_IGNORED:
            continue
        old, new = recorded[name], getattr(opts, name)
        if given is not None and name not in given:
            opts = replace(opts, **{name: old})
        elif new != old and name in RESUME_REFUSED:
            raise UsageError(f"--resume: {source} is a run with {flag(name)} {old}; {flag(name)} {new} "
                             "cannot continue it (start a new run in another --out)")
        elif new != old and name not in RESUME_RUNTIME:
            changes[name] = (old, new)
    if opts.epochs < done or (opts.epochs == done and not finished_ok):
        raise UsageError(f"--resume: {source} has finished epoch {done} and --epochs is {opts.epochs}; "
                         f"give --epochs larger than {done} to train further")
    return opts, changes


def describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """'--lr 0.0005 (was 0.001); ...' for the log of a resumed run."""
    return "; ".join(f"{flag(name)} {new} (was {old})" for name, (old, new) in changes.items())
