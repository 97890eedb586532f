"""The W-MCSA backend contract, and the selection that derives from it.

Each backend is one frozen `Backend` record (declared in its own module of ops/backends/): the
devices and dtypes it runs, its head_dim and window limits, the minimum compute capability on
CUDA devices, a `limits` check for what depends on the whole problem (for the compiled kernels:
grid, 32-bit index and shared-memory limits) and `missing` (why its dependency is unavailable).
`Backend.reasons(problem)` is derived from these fields alone, so `explain` reports every
backend the same way and `backend="auto"` takes the first backend, in the registry's order
(ops.BACKENDS), that has no reason to refuse the problem.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from .validate import WindowProblem

Runner = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, WindowProblem], torch.Tensor]


@dataclass(frozen=True)
class CudaDevice:
    """What the contract needs to know of a CUDA device."""

    capability: tuple[int, int]
    shared_memory_per_block_optin: int  # bytes


def constant_when_traced(fn: Callable) -> Callable:
    """`torch.compiler.assume_constant_result`, without importing torch._dynamo (and with it
    triton and Inductor) when poster_fast is imported: the same marker, which torch.compile
    reads. While tracing, `fn` is called once, eagerly, and its result baked in; its arguments
    must be constants (ints, not symbolic sizes)."""
    fn._dynamo_marked_constant = True
    return fn


@functools.cache
def _cuda_device(index: int) -> CudaDevice:
    props = torch.cuda.get_device_properties(index)
    return CudaDevice((props.major, props.minor), props.shared_memory_per_block_optin)


@constant_when_traced
def cuda_device(device: torch.device) -> CudaDevice | None:
    """The properties of a CUDA device, None when there is no such device."""
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device() if device.index is None else device.index
    return _cuda_device(index) if index < torch.cuda.device_count() else None


def _names(items) -> str:
    return ", ".join(str(i).removeprefix("torch.") for i in items)


def _nothing_missing() -> str:
    return ""


@dataclass(frozen=True)
class Backend:
    """One implementation of the op and what it supports.

    `None` in a limit field means "no limit". `run(q, k, v, table, problem)` computes the op
    for a problem that `reasons` accepts. `auto_devices` (default: `devices`) are the device
    types on which `backend="auto"` may pick it: a backend can run elsewhere without being worth
    picking (Triton under its CPU interpreter). `missing()` says why a dependency is unavailable
    ('' when it is); `limits(problem, cuda_device)` adds the backend's own checks, run only when
    the declared fields accept the problem (`cuda_device` is None off CUDA). `torch_ops` names
    the (forward, backward) torch ops a compiled backend runs; `deterministic` promises
    bitwise-identical results, the table gradient included, for identical inputs.
    """

    name: str
    run: Runner
    devices: tuple[str, ...] | None
    dtypes: tuple[torch.dtype, ...] | None
    auto_devices: tuple[str, ...] | None = None
    max_head_dim: int | None = None
    max_window: tuple[int | None, int | None] = (None, None)
    min_compute_capability: tuple[int, int] | None = None
    missing: Callable[[], str] = _nothing_missing
    limits: Callable[[WindowProblem, CudaDevice | None], list[str]] | None = None
    torch_ops: tuple[str, str] | None = None
    deterministic: bool = True

    def reasons(self, p: WindowProblem) -> list[str]:
        """Why this backend cannot run `p` (empty when it can)."""
        missing = self.missing()
        if missing:
            return [missing]
        why = []
        if self.devices is not None and p.device.type not in self.devices:
            why.append(f"inputs are on {p.device.type}; {self.name} runs on {_names(self.devices)}")
        if self.dtypes is not None and p.dtype not in self.dtypes:
            why.append(f"dtype {_names([p.dtype])} is not supported ({_names(self.dtypes)})")
        if self.max_head_dim is not None and p.head_dim > self.max_head_dim:
            why.append(f"head_dim {p.head_dim} > {self.max_head_dim} is not supported")
        for axis, size, most in zip(("height", "width"), p.window, self.max_window):
            if most is not None and size > most:
                why.append(f"window {axis} {size} > {most} is not supported")
        if why:
            return why
        device = cuda_device(p.device) if p.device.type == "cuda" else None
        if p.device.type == "cuda":
            if device is None:
                return [f"no CUDA device {p.device} is available"]
            need = self.min_compute_capability
            if need is not None and device.capability < need:
                return [f"compute capability {device.capability[0]}.{device.capability[1]} < "
                        f"{need[0]}.{need[1]} required"]
        return list(self.limits(p, device)) if self.limits is not None else []

    @property
    def picked_on(self) -> tuple[str, ...] | None:
        """The device types on which `backend="auto"` may pick this backend (None: any)."""
        return self.auto_devices if self.auto_devices is not None else self.devices


_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend, before: str | None = None) -> None:
    """Make `backend` selectable by name and by `auto`.

    Args:
        backend: the declaration; its name must be new (and not "auto").
        before: the registered backend that `auto` tries right after it (default: it comes
            last). ops/backends/__init__.py registers the backends in ops.BACKENDS order.
    """
    if backend.name in ("auto", *_REGISTRY):
        raise ValueError(f"backend name {backend.name!r} is already taken")
    if before is not None and before not in _REGISTRY:
        raise ValueError(f"before: expected a registered backend, got {before!r}")
    order = list(_REGISTRY.items())
    at = len(order) if before is None else list(_REGISTRY).index(before)
    order.insert(at, (backend.name, backend))
    _REGISTRY.clear()
    _REGISTRY.update(order)


def registered() -> tuple[str, ...]:
    """Names of the registered backends, in `auto`'s order."""
    return tuple(_REGISTRY)


def get(name: str) -> Backend:
    if name not in _REGISTRY:
        raise KeyError(f"unknown backend {name!r}; known: {', '.join(registered())}")
    return _REGISTRY[name]


def reasons(name: str, problem: WindowProblem, auto: bool = False) -> list[str]:
    """Why backend `name` cannot run `problem` (empty when it can); with `auto`, also why
    `backend="auto"` would not pick it."""
    if name not in _REGISTRY:
        return [f"unknown backend {name!r}; known: {', '.join(registered())}"]
    backend = _REGISTRY[name]
    why = backend.reasons(problem)
    on = backend.picked_on
    if auto and on is not None and problem.device.type not in on:
        why.append(f"not picked automatically on {problem.device.type} (only on {_names(on)})")
    return why


def explain(problem: WindowProblem) -> dict[str, list[str]]:
    """Every backend in `auto`'s order, each with its reasons not to be picked."""
    return {name: reasons(name, problem, auto=True) for name in registered()}


def select(name: str, problem: WindowProblem) -> Backend:
    """The backend that runs `problem`: `name`, or the first acceptable one for "auto"."""
    if name == "auto":
        for candidate in registered():  # lazily: later backends' checks are not evaluated
            if not reasons(candidate, problem, auto=True):
                return _REGISTRY[candidate]
        raise RuntimeError(f"no W-MCSA backend can run this problem: {explain(problem)}")
    why = reasons(name, problem)
    if why:
        raise RuntimeError(f"backend={name!r} cannot run this problem: " + "; ".join(why))
    return _REGISTRY[name]
