"""Backend registry for W-MCSA: each backend says whether it can run a problem, and why not."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .validate import WindowProblem

Runner = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, WindowProblem], torch.Tensor]


@dataclass(frozen=True)
class Backend:
    """One implementation of the op.

    `not_supported_reasons(problem)` returns an empty list when `run` can compute the problem.
    `auto_devices` are the device types on which `backend="auto"` may pick it (a backend can be
    runnable elsewhere, e.g. Triton under the CPU interpreter, without being worth picking).
    """

    name: str
    run: Runner
    not_supported_reasons: Callable[[WindowProblem], list[str]]
    auto_devices: tuple[str, ...] = field(default=("cpu", "cuda"))


_REGISTRY: dict[str, Backend] = {}
# Priority for backend="auto", fastest first; "reference" is always last and always runs.
AUTO_ORDER = ("triton", "cuda", "cpu", "reference")


def register(backend: Backend) -> None:
    _REGISTRY[backend.name] = backend


def registered() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def reasons(name: str, problem: WindowProblem, auto: bool = False) -> list[str]:
    """Why backend `name` cannot run `problem` (empty when it can)."""
    backend = _REGISTRY.get(name)
    if backend is None:
        return [f"unknown backend {name!r}; known: {', '.join(_REGISTRY)}"]
    why = list(backend.not_supported_reasons(problem))
    if auto and problem.device.type not in backend.auto_devices:
        why.append(f"not picked automatically on {problem.device.type} "
                   f"(auto uses it on {', '.join(backend.auto_devices)})")
    return why


def explain_problem(problem: WindowProblem) -> dict[str, list[str]]:
    """Every backend in auto priority order, each with its reasons to be skipped."""
    names = [n for n in AUTO_ORDER if n in _REGISTRY] + [n for n in _REGISTRY if n not in AUTO_ORDER]
    return {name: reasons(name, problem, auto=True) for name in names}


def select(name: str, problem: WindowProblem) -> Backend:
    if name == "auto":
        for candidate, why in explain_problem(problem).items():
            if not why:
                return _REGISTRY[candidate]
        raise RuntimeError("no W-MCSA backend can run this problem: " + str(explain_problem(problem)))
    why = reasons(name, problem)
    if why:
        raise RuntimeError(f"backend={name!r} cannot run this problem: " + "; ".join(why))
    return _REGISTRY[name]
