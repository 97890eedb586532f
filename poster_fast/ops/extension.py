"""torch.library bindings for poster_fast._C (being written)."""
