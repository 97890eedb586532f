"""Lower bounds of the memory POSTER V2 needs per image, from which the batch-size options take
their upper bounds (standard library only: the commands check them before loading torch's
model). tests/test_safety.py measures the model again and holds these figures to it.

The model sees a 112x112 resize of any input, so apart from the input itself the figures do not
depend on the image size.
"""
from __future__ import annotations

from .levels import LEVELS, Level

MIB = 2 ** 20
# Activations autograd keeps for the backward pass, per image: 110 MiB in float32, 65 MiB under
# bf16 autocast (measured at batch 1 and 3, torch 2.13); the lower of the two, rounded down.
TRAIN_BYTES_PER_IMAGE = 64 * MIB
# The largest single activation of one image in inference: 3 MiB in float32, 1.5 MiB in bf16.
INFER_BYTES_PER_IMAGE = 3 * MIB // 2


def input_bytes(image_size: int) -> int:
    """One float32 image of 3 x image_size x image_size."""
    return 3 * image_size * image_size * 4


def op_bytes_per_item(level: Level) -> int:
    """One image's attention scores at `level` in float64, which `poster-fast bench` computes to
    measure every backend's error: heads x N x N (one window per image)."""
    return level.heads * level.tokens * level.tokens * 8


def largest_op_bytes_per_item(levels: tuple[Level, ...] = LEVELS) -> int:
    return max(op_bytes_per_item(level) for level in levels)
