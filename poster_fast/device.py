"""Where a model runs and in which precision: the default device of every command, the hardware
facts that matter for speed, and the `--precision auto` choice derived from them.

torch is imported only when a function runs, so the command line can read `PRECISIONS` at no cost.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# CPU features with which bf16 matrix products run natively (Linux /proc/cpuinfo names):
# AMX tiles (Sapphire Rapids and later) and the AVX-512 bf16 dot product (Cooper Lake, Zen 4).
CPU_BF16_FEATURES = ("amx_bf16", "avx512_bf16")
CUDA_BF16_CAPABILITY = (8, 0)  # Ampere: bf16 tensor cores


def default_device(requested: str | None = None) -> "torch.device":
    """`requested` ("cpu", "cuda", "cuda:1", ...) when given, else cuda if available, else cpu."""
    import torch

    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def memory_bytes(device: "torch.device") -> int:
    """The memory of `device`: a CUDA GPU's, or the machine's RAM (the cgroup's limit where lower)."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device.index or 0).total_memory)
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return ram
    return min(ram, int(limit)) if limit.isdigit() else ram


@dataclass(frozen=True)
class Hardware:
    """What the precision choice needs to know of a device: its type, the bf16 features of the
    CPU (a subset of CPU_BF16_FEATURES) and the compute capability of a CUDA device."""

    device_type: str
    name: str
    cpu_features: frozenset[str] = frozenset()
    cuda_capability: tuple[int, int] | None = None


def _cpu_features() -> frozenset[str]:
    """CPU_BF16_FEATURES that this CPU has and the OS enables, from torch's cpuinfo queries (which
    check OS support: AMX needs the kernel's permission), else /proc/cpuinfo's flags."""
    import torch

    queries = {"amx_bf16": getattr(torch.cpu, "_is_amx_tile_supported", None),
               "avx512_bf16": getattr(torch.cpu, "_is_avx512_bf16_supported", None)}
    if all(queries.values()):
        return frozenset(name for name, query in queries.items() if query())
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return frozenset()
    return frozenset(CPU_BF16_FEATURES) & set(flags)


def _cpu_name() -> str:
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            name = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        name = ""
    return name or platform.processor() or "CPU"


def hardware(device: "torch.device | str") -> Hardware:
    """The facts of `device` as this process sees them."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return Hardware("cuda", torch.cuda.get_device_name(index),
                        cuda_capability=torch.cuda.get_device_capability(index))
    if device.type == "cpu":
        return Hardware("cpu", _cpu_name(), cpu_features=_cpu_features())
    return Hardware(device.type, device.type)


def native_bf16(hw: Hardware) -> tuple[bool, str]:
    """Whether `hw` computes bf16 matrix products natively, and why (or why not)."""
    if hw.device_type == "cuda":
        major, minor = hw.cuda_capability or (0, 0)
        need = CUDA_BF16_CAPABILITY
        verdict = (major, minor) >= need
        return verdict, f"compute capability {major}.{minor} {'>=' if verdict else '<'} {need[0]}.{need[1]}"
    if hw.device_type == "cpu":
        found = [f for f in CPU_BF16_FEATURES if f in hw.cpu_features]
        if found:
            return True, f"CPU has {' and '.join(found)}"
        return False, f"CPU has neither {' nor '.join(CPU_BF16_FEATURES)}: bf16 would be emulated"
    return False, f"no native bf16 rule for {hw.device_type} devices"


@dataclass(frozen=True)
class Precision:
    """The precision a model runs in: `name` from PRECISIONS less "auto", and why it was chosen."""

    name: str
    reason: str

    @property
    def dtype(self) -> "torch.dtype":
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def choose_precision(requested: str, hw: Hardware) -> Precision:
    """`requested` as is, or for "auto": bf16 where `hw` computes it natively, else fp32."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return Precision(requested, "asked for")
    native, why = native_bf16(hw)
    return Precision("bf16" if native else "fp32", f"auto on {hw.name}: {why}")
