"""Fused Triton W-MCSA: kernels.py (the @triton.jit kernels), launch.py (grids and launches)."""
