import os

import torch

# Triton kernels run through the interpreter where no CUDA GPU is visible; this must be set
# before any @triton.jit function is defined, i.e. before poster_fast is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
