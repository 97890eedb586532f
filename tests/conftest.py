import os

import torch

# Triton kernels run through the interpreter where no CUDA GPU is visible; this must be set
# before the Triton kernels are first imported. On a GPU, tests use the first autotune config each
# kernel may pick for the dtype and arch (ops/triton/kernels.py reads this); the benchmarks tune.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:
    os.environ.setdefault("POSTER_FAST_TRITON_CONFIGS", "first")
