"""The one default device choice of every command: the device asked for, else the first CUDA
GPU when torch sees one, else the CPU."""
from __future__ import annotations

import torch


def default_device(requested: str | None = None) -> torch.device:
    """`requested` ("cpu", "cuda", "cuda:1", ...) when given, else cuda if available, else cpu."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
