"""Options that several commands share, defined once (standard library only)."""
from __future__ import annotations

import argparse

from ..data.labels import DATASETS, label_table
from ..device import PRECISIONS
from ..training.options import AMP_MODES, TrainOptions


def comma_list(text: str) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c']."""
    return [item.strip() for item in text.split(",")]


def dataset_tables() -> str:
    """Every dataset's 'index: folder = class' table, one line each, for help texts."""
    return "\n".join(f"  {d}: {label_table(d)}" for d in DATASETS)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Where and how the model runs, and whether its files may hold pickled Python objects."""
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available; "
                                    "under torchrun: one GPU per process)")
    p.add_argument("--attn-backend", default="auto", help="W-MCSA backend (see poster_fast.ops)")
    p.add_argument("--trusted", action="store_true",
                   help="unpickle files that hold Python objects besides tensors (the authors' "
                        "training checkpoints)")


def add_inference_options(p: argparse.ArgumentParser) -> None:
    """How a trained model runs for predict and evaluate (inference.classifier.prepare_for_inference)."""
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="weights and arithmetic (auto: bf16 where the device computes it natively: "
                        "CPUs with AMX or AVX512-BF16, CUDA GPUs of compute capability 8.0 and "
                        "newer; else fp32)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (on CUDA with CUDA graphs, on the CPU with Inductor "
                        "freezing): minutes of compiling first, see the README for when it pays")


def add_data_options(p: argparse.ArgumentParser, amp: bool = True) -> None:
    """An ImageFolder dataset and how it is read (train and evaluate); `amp`: with train's --amp
    (evaluate's precision is --precision)."""
    p.add_argument("--data", required=True, help="dataset root holding train/ and valid/ class folders")
    p.add_argument("--classes", type=comma_list,
                   help="comma-separated class names for the sorted class folders "
                        "(instead of the dataset's official numbering)")
    p.add_argument("--image-size", type=int, default=TrainOptions.image_size,
                   help="images are resized to this (square)")
    p.add_argument("--workers", type=int, default=TrainOptions.workers, help="data loader processes")
    if amp:
        p.add_argument("--amp", choices=AMP_MODES, default=TrainOptions.amp,
                       help="bf16 autocast (auto: where bf16 is native: CUDA GPUs of compute capability "
                            "8.0 and newer, CPUs with AMX or AVX512-BF16)")
