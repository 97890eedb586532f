"""Triton W-MCSA backend (being written)."""
