import os

import torch

# Triton kernels run through the interpreter where no CUDA GPU is visible; this must be set
# before the Triton kernels are first imported. On a GPU, tests use each kernel's first autotune
# config (ops/triton/kernels.py reads this); the benchmarks tune.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:
    os.environ.setdefault("POSTER_FAST_TRITON_CONFIGS", "first")
