"""Sharpness-aware minimisation (Foret et al. 2021), as the authors' sam.py (adaptive=False)."""
from __future__ import annotations

import torch


class SAM:
    """SAM around a base optimiser: w += rho * g / ||g|| (global L2 norm), gradient at the
    perturbed point, restore w, base step. Schedulers and state dicts use `base`."""

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05) -> None:
        self.base, self.rho = base, rho
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.base.param_groups for p in g["params"] if p.grad is not None]

    @torch.no_grad()
    def first_step(self) -> None:
        params = self._params()
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        scale = self.rho / (norm + 1e-12)
        self._saved = [(p, p.detach().clone()) for p in params]
        for p in params:
            p.add_(p.grad * scale.to(p.dtype))

    @torch.no_grad()
    def second_step(self) -> None:
        for p, old in self._saved:
            p.copy_(old)
        self._saved = []
        self.base.step()
