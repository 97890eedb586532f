"""Fused Triton W-MCSA: kernels.py (the @triton.jit kernels), launch.py (grids and launches),
library.py (their torch ops). Nothing here is imported before the triton backend first runs."""
