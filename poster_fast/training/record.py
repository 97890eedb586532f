"""What a training run records about itself (in last.pt, best.pt and summary.json under "run"):
its options, the seed, the software versions and the device it ran on, a summary of its data, how
the session that wrote the file was launched, and the resumes that continued it. Everything is plain JSON (strings, numbers, lists, dicts, None);
the schema (checkpoint.RECORD_ENTRIES, check_record, describe_record) is beside the files' format.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..checkpoint import RECORD_FORMAT

if TYPE_CHECKING:
    from .distributed import Dist
    from .data import TrainData
    from .options import TrainOptions


def software_versions(torch_module: Any = None,
                      find_spec: Callable[[str], Any] = importlib.util.find_spec,
                      package_version: Callable[[str], str] = importlib.metadata.version) -> dict[str, Any]:
    """Python, torch, poster_fast, CUDA (None on a CPU build), cuDNN and Triton (None where absent;
    Triton's version comes from its package metadata, without importing it). The arguments
    replace torch and the importlib functions (tests)."""
    from ..version import __version__

    if torch_module is None:
        import torch as torch_module
    cudnn = torch_module.backends.cudnn
    triton = None
    if find_spec("triton") is not None:
        try:
            triton = package_version("triton")
        except importlib.metadata.PackageNotFoundError:
            triton = "unknown"
    return {"python": platform.python_version(), "torch": str(torch_module.__version__),
            "poster_fast": __version__, "cuda": torch_module.version.cuda,
            "cudnn": cudnn.version() if cudnn.is_available() else None, "triton": triton}


def device_info(d: "Dist") -> dict[str, Any]:
    """The device this rank trains on, its name (GPU or CPU model) and the number of processes."""
    from ..device import hardware

    return {"device": str(d.device), "name": hardware(d.device).name, "world_size": d.world}


def data_summary(opts: "TrainOptions", data: "TrainData") -> dict[str, Any]:
    """The dataset root, the class names (and the folders they name), and per split the number
    of images and the count of each class."""
    splits = {"train": data.train_set, opts.val_split: data.val_set}
    if data.test_set is not None:
        splits[str(data.test_set.root.name)] = data.test_set
    per_split = {}
    for name, folder in splits.items():
        counts = [0] * len(data.classes)
        for target in folder.targets:
            counts[target] += 1
        per_split[name] = {"images": len(folder), "per_class": dict(zip(data.classes, counts))}
    return {"root": str(Path(opts.data).resolve()), "dataset": opts.dataset, "classes": list(data.classes),
            "class_folders": list(data.train_set.folders), "splits": per_split}


def now() -> str:
    """The time in UTC, to the second, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def resume_entry(source: Path, after_epoch: int, step: int, changes: Mapping[str, tuple[Any, Any]],
                 d: "Dist") -> dict[str, Any]:
    """One resume: the file continued, the epoch it had finished and the steps done in the next,
    when, torchrun's restart count (None outside torchrun), the world size, and the options
    changed {name: [was, now]}."""
    return {"from": str(Path(source).resolve()), "after_epoch": after_epoch, "step": step, "at": now(),
            "restart": d.restart, "world_size": d.world,
            "changes": {name: [old, new] for name, (old, new) in changes.items()}}


def launch_info(opts: "TrainOptions", d: "Dist") -> dict[str, Any]:
    """How this session runs: processes, nodes, gradient accumulation, the global batch and the
    images each process runs per forward pass, SyncBatchNorm, torchrun's restart count, the start."""
    return {"world_size": d.world, "nodes": d.nodes, "accum_steps": opts.accum_steps,
            "batch_per_process": opts.batch_size // (d.world * opts.accum_steps), "global_batch": opts.batch_size,
            "sync_bn": opts.sync_bn and d.world > 1, "restart": d.restart, "started": now()}


def run_record(opts: "TrainOptions", data: "TrainData", d: "Dist", resume: Mapping[str, Any] | None = None,
               previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The record of a run with options `opts` (checked, as the run uses them) on `data`, in
    process group `d`, with what the "auto" options resolved to. A resumed run passes its
    `resume_entry` and the record of the file it continues (`previous`, None for files without
    one): the resumes accumulate."""
    resumes = list(previous["resumes"]) if previous else []
    if resume is not None:
        resumes.append(dict(resume))
    from .steps import amp_enabled

    balanced = data.recipe.balanced if opts.sampler == "auto" else opts.sampler == "balanced"
    launch = launch_info(opts, d)
    resolved = {"amp": "bf16" if amp_enabled(opts.amp, d.device) else "off",
                "sampler": "balanced" if balanced else "shuffle", "batch_per_process": launch["batch_per_process"]}
    return {"format": RECORD_FORMAT, "options": asdict(opts), "resolved": resolved, "seed": opts.seed,
            "versions": software_versions(), "device": device_info(d), "data": data_summary(opts, data),
            "launch": launch, "resumes": resumes}
