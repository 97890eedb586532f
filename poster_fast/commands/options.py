"""Options that several commands share, defined once, and the checks every command runs on
its options before any work (standard library only at import; torch where a check needs it)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from ..checks import Range, check_fits, check_names
from ..data.labels import DATASETS, label_table
from ..device import PRECISIONS
from ..errors import UsageError
from ..files import check_input
from ..ops import BACKENDS
from ..training.options import AMP_MODES, LIMITS, TrainOptions

ATTN_BACKENDS = ("auto", *BACKENDS)


def number(limits: Range) -> Callable[[str], Any]:
    """An argparse type: the number in the text, or an error saying what is expected."""
    def parse(text: str) -> Any:
        try:
            return limits.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return parse


def comma_list(text: str) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c']: distinct, non-empty names."""
    try:
        return check_names("names", [item.strip() for item in text.split(",")])
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated, distinct, non-empty class names, "
                                         f"got {text!r}") from err


def dataset_tables() -> str:
    """Every dataset's 'index: folder = class' table, one line each, for help texts."""
    return "\n".join(f"  {d}: {label_table(d)}" for d in DATASETS)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Where and how the model runs, and whether its files may hold pickled Python objects."""
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available; "
                                    "under torchrun: one GPU per process)")
    p.add_argument("--attn-backend", default="auto", choices=ATTN_BACKENDS,
                   help="W-MCSA backend (see poster_fast.ops.explain)")
    add_trusted_option(p)


def add_trusted_option(p: argparse.ArgumentParser) -> None:
    """--trusted: whether checkpoint files may hold pickled Python objects."""
    p.add_argument("--trusted", action="store_true",
                   help="also read checkpoint files that pickle Python objects besides tensors (the "
                        "authors' training checkpoints); unpickling runs code from the file, so use it "
                        "only for files you trust")


def add_inference_options(p: argparse.ArgumentParser) -> None:
    """How a trained model runs for predict and evaluate (inference.classifier.prepare_for_inference)."""
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="weights and arithmetic (auto: bf16 where the device computes it natively: "
                        "CPUs with AMX or AVX512-BF16, CUDA GPUs of compute capability 8.0 and "
                        "newer; else fp32)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (on CUDA with CUDA graphs, on the CPU with Inductor "
                        "freezing): minutes of compiling first, see docs/design.md for when it pays")


def add_data_options(p: argparse.ArgumentParser, amp: bool = True, resumable: bool = False) -> None:
    """An ImageFolder dataset and how it is read (train and evaluate). `amp`: with train's --amp
    (evaluate's precision is --precision). `resumable`: the image size defaults to None, i.e.
    TrainOptions' default, or on --resume the run's own."""
    p.add_argument("--data", required=True, help="dataset root holding train/ and valid/ class folders")
    p.add_argument("--classes", type=comma_list,
                   help="comma-separated class names for the sorted class folders "
                        "(instead of the dataset's official numbering)")
    p.add_argument("--image-size", type=number(LIMITS["image_size"]),
                   default=None if resumable else TrainOptions.image_size,
                   help="images are resized to this (square)" +
                        (f" (default: {TrainOptions.image_size}; --resume: the run's)" if resumable else ""))
    p.add_argument("--workers", type=number(LIMITS["workers"]), default=TrainOptions.workers,
                   help="data loader processes")
    if amp:
        p.add_argument("--amp", choices=AMP_MODES, default=TrainOptions.amp,
                       help="bf16 autocast (auto: where bf16 is native: CUDA GPUs of compute capability "
                            "8.0 and newer, CPUs with AMX or AVX512-BF16)")


def check_device(text: str | None) -> None:
    """--device names a device torch has here (imports torch)."""
    if text is None:
        return
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {text}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise UsageError(f"--device {text}: no CUDA GPU is visible to torch here "
                             f"(torch {torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {text}: there are {count} CUDA GPUs (cuda:0 to cuda:{count - 1})")
    elif device.type != "cpu":
        raise UsageError(f"--device {text}: expected cpu, cuda or cuda:N")


def check_attn_backend(name: str, device: str | None) -> None:
    """--attn-backend can run POSTER V2's three W-MCSA levels (float32) on the device (imports
    torch and the ops)."""
    if name == "auto":
        return
    import torch

    from .. import ops
    from ..model import LEVELS

    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    why: list[str] = []
    for level in LEVELS:
        problem = ops.WindowProblem(1, 1, level.heads, level.tokens, level.head_dim, (level.window, level.window),
                                    level.head_dim ** -0.5, torch.float32, dev)
        why += [w for w in ops.reasons(name, problem) if w not in why]
    if why:
        raise UsageError(f"--attn-backend {name} cannot run on {dev}: {'; '.join(why)}")


def add_force_option(p: argparse.ArgumentParser, what: str) -> None:
    """--force: overwrite existing outputs (never an input: files.check_output_file)."""
    p.add_argument("--force", action="store_true", help=f"{what} (never a file this command reads)")


def check_batch_memory(option: str, value: int, per_item: int, device: str | None, what: str) -> None:
    """`value` items of at least `per_item` bytes fit in the memory of `device` (the default
    device for None); UsageError naming `option` otherwise (imports torch)."""
    from ..device import default_device, memory_bytes

    try:
        check_fits(option, value, per_item, memory_bytes(default_device(device)), what)
    except ValueError as err:
        raise UsageError(str(err)) from None


def check_model_options(args: argparse.Namespace) -> None:
    """The options of add_model_options, before anything is loaded."""
    check_device(args.device)
    check_attn_backend(args.attn_backend, args.device)


def check_checkpoint(option: str, path: str) -> None:
    """A model to read: a checkpoint or safetensors file, or a save_pretrained folder (config.json)."""
    folder = os.path.isdir(path)
    check_input(option, path, folder=folder)
    if folder:
        config = os.path.join(path, "config.json")
        if not os.path.lexists(config):
            raise UsageError(f"{option} {path}: is a folder without config.json; expected a checkpoint file or a "
                             f"save_pretrained folder")
        check_input(option, config)


def checkpoint_files(path: str) -> list[Path]:
    """The files that reading the model in `path` reads (hub.exported_files; imports torch)."""
    from ..hub import exported_files

    return exported_files(path)


def check_input_options(args: argparse.Namespace, files: Sequence[str] = (), folders: Sequence[str] = ()) -> None:
    """Each named option, when given, is an existing, readable file (or folder)."""
    for names, folder in ((files, False), (folders, True)):
        for name in names:
            value = getattr(args, name)
            if value is not None:
                check_input(f"--{name.replace('_', '-')}", value, folder=folder)
