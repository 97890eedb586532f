"""The PyTorch checkpoint files: the authors' (trained POSTER V2 checkpoints and the two
pretrained backbones) and those `poster-fast train` writes, with the record of the run that they
hold. A file format module: it imports no model and nothing from training/ (hub.py: the Hugging
Face formats; pretrained.py: any of these files -> a model).

The authors' files are accepted as they are: a dict holding "state_dict" or a bare state dict,
"module." prefixes from DataParallel, the 36 keys of modules the authors build but never use
(UNUSED_KEY: dropped and reported when loaded), and `total_ops`/`total_params` entries that thop
leaves behind (THOP_KEY).

Ours (best.pt, last.pt) are dicts that `torch.load(weights_only=True)` reads: "state_dict"
(no "module." prefixes) with the metadata MODEL_META and the run's record RUN; the training
state (last.pt) adds TRAINING_STATE, what `--resume` needs, and for a state saved within an
epoch MID_EPOCH_STATE, what continues it at the next step. A run record is plain JSON
(RECORD_ENTRIES; training/record.py builds it, check_record checks it).
"""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .checks import NUM_CLASSES, check_names
from .errors import CheckpointError
from .files import file_problem, open_regular, write_file

UNUSED_KEY = re.compile(
    r"^(face_landback\.output_layer\.|ir_back\.output_layer\.|VIT\.(patch_embed|eca_block|CON1|"
    r"IRLinear1|IRLinear2)\.|VIT\.blocks\.\d+\.conv\.)")
THOP_KEY = re.compile(r"(^|\.)(total_ops|total_params)$")


class _LenientUnpickler(pickle.Unpickler):
    """Unpickles the authors' training files, whose extra entries (e.g. __main__.RecorderMeter)
    refer to classes that do not exist here: such classes become inert placeholders."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (AttributeError, ModuleNotFoundError):
            return type(name, (), {"__setstate__": lambda self, state: None})


class _LenientPickle:
    Unpickler = _LenientUnpickler
    load = pickle.load
    __name__ = "poster_fast_lenient_pickle"


def source_name(source: Any) -> str:
    """How error messages name a checkpoint source (a path, a file object's name)."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", None) if isinstance(getattr(source, "name", None), str) else "the file object"


def _cause(err: BaseException, head: bytes) -> str:
    """What a failed torch.load says about the file that starts with `head`, in one line."""
    text = " ".join(str(err).split())
    if head == b"PK\x03\x04" or "central directory" in text:
        return f"a damaged zip archive (truncated or corrupt; {type(err).__name__}: {text[:100]})"
    if isinstance(err, EOFError) or "Ran out of input" in text:
        return "the file ends too early (truncated, or not a checkpoint)"
    if "magic number" in text:
        return "not a PyTorch checkpoint (invalid magic number)"
    return f"not a PyTorch checkpoint, or a corrupt one ({type(err).__name__}: {text[:160]})"


def _check_file(path: str | os.PathLike) -> None:
    """CheckpointError naming `path` unless it is a non-empty regular file that can be read
    (a FIFO, socket or device is said to be one, and never opened)."""
    p = Path(path)
    problem = file_problem(p)
    if problem == "does not exist":
        raise CheckpointError(f"checkpoint {p} does not exist")
    if problem == "is a folder":
        raise CheckpointError(f"{p}: is a folder, not a checkpoint file")
    if problem is not None:
        raise CheckpointError(f"{p}: {problem}")
    try:
        empty = p.stat().st_size == 0
    except OSError as err:
        raise CheckpointError(f"{p}: {err.strerror or err}") from None
    if empty:
        raise CheckpointError(f"{p}: the file is empty (0 bytes)")


# What the weights-only unpickler names when it refuses a pickle for a global: a class or
# function that unpickling would import and may call.
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _pickled_globals(fh: Any, start: int) -> list[str]:
    """The globals (module.name) the pickle at `start` in `fh` names, read with pickletools,
    which runs nothing; [] where the bytes are not a pickle."""
    names: list[str] = []
    strings: list[str] = []
    try:
        fh.seek(start)
        for op, arg, _ in pickletools.genops(fh):
            if op.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(".".join(strings[-2:]))
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # not a pickle (pickletools raises ValueError, struct.error, ...)
        pass
    return names


def _needs_trusted(name: str, text: str, fh: Any, start: int) -> str | None:
    """The message for a file that torch.load(weights_only=True) refused for the Python objects
    its pickle names (None when it refused it for another reason)."""
    found = _REFUSED_GLOBAL.findall(text) or _pickled_globals(fh, start)
    if not found:
        return None
    return (f"{name}: the file holds pickled Python objects besides tensors (it names "
            f"{', '.join(dict.fromkeys(found[:3]))}). Reading it means unpickling, which runs code that the file "
            "names: if you trust the file (the authors' training checkpoints are like this), pass --trusted "
            "(Python: trusted=True); unknown classes then become placeholders.")


def _load(fh: Any, name: str, trusted: bool) -> Any:
    """torch.load of an open file: weights only, then (trusted) with the lenient unpickler."""
    try:
        start = fh.tell()
        head = fh.read(4)
        fh.seek(start)
    except (OSError, AttributeError, ValueError) as err:
        raise CheckpointError(f"{name}: cannot be read ({err})") from None
    head = head if isinstance(head, bytes) else b""
    try:
        with warnings.catch_warnings():  # its note on a pickle protocol it was not written with
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        refused = _needs_trusted(name, text, fh, start) if "Weights only load failed" in text else None
        if refused is None:
            raise CheckpointError(f"{name}: {_cause(err, head)}") from err
        if not trusted:
            raise CheckpointError(refused) from err
    except Exception as err:  # torch.load raises many types for damaged files
        raise CheckpointError(f"{name}: {_cause(err, head)}") from err
    fh.seek(start)
    try:
        return torch.load(fh, map_location="cpu", weights_only=False, pickle_module=_LenientPickle)
    except Exception as err:
        raise CheckpointError(f"{name}: {_cause(err, head)}") from err


def read_checkpoint(source: str | os.PathLike | io.IOBase, trusted: bool = False) -> Any:
    """The object a checkpoint file (path or file object) holds, read with
    `torch.load(weights_only=True)`; with `trusted`, files that pickle other Python objects too
    (unpickling runs code from the file; unknown classes become placeholders). Every failure
    is a CheckpointError naming the file and the cause; a path must name a regular file
    (files.open_regular)."""
    name = source_name(source)
    if not isinstance(source, (str, os.PathLike)):
        if not hasattr(source, "read"):
            raise CheckpointError(f"expected a checkpoint path, file object or state dict, got "
                                  f"{type(source).__name__}")
        return _load(source, name, trusted)
    _check_file(source)
    try:
        fh = open_regular(source)
    except OSError as err:
        raise CheckpointError(f"{name}: {err.strerror or err}") from None
    with fh:
        return _load(fh, name, trusted)


def state_dict_of(obj: Any, name: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The flat state dict (without "module." prefixes) in a loaded checkpoint object, and notes
    on what was changed; CheckpointError naming the source `name` if it holds none."""
    notes: list[str] = []
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()) \
            or not all(isinstance(k, str) for k in obj):
        found = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{name}: not a checkpoint: expected a state dict or a dict with "
                              f"'state_dict', found {found}")
    state = {}
    for key, value in obj.items():
        if key.startswith("module."):
            key = key[len("module."):]
        state[key] = value
    if any(k.startswith("module.") for k in obj):
        notes.append("stripped 'module.' prefixes")
    return state, notes


def non_finite(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors holding NaN or infinite values."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


# ----------------------------------------------------------------------------- our files

MODEL_META = ("num_classes", "dataset", "classes", "epoch", "best_acc")
TRAINING_STATE = ("best_epoch", "optimizer", "scheduler")
# "epoch" is the last finished epoch; a state saved within the next one adds the optimiser steps
# done in it, the images its order has dealt (all ranks), and per rank (a list in rank order)
# {"rng": training.rng.rng_state(), "stats": float64 [loss sum, correct, seen] of the epoch so far}.
# Files without them (written at an epoch's end, or before they existed) are at step 0.
MID_EPOCH_STATE = ("step", "samples", "ranks")
RUN = "run"  # the run's record (RECORD_ENTRIES below), optional: older files lack it
# The type of each entry of our files; "options" (the run's TrainOptions, for --resume) and
# "run" are optional: files written before they were recorded lack them.
ENTRY_TYPES: dict[str, type | tuple[type, ...]] = {
    "state_dict": Mapping, "num_classes": int, "dataset": str, "classes": (list, tuple), "epoch": int,
    "best_acc": (int, float), "best_epoch": int, "optimizer": Mapping, "scheduler": Mapping,
    "options": (Mapping, type(None)), RUN: (Mapping, type(None)), "step": int, "samples": int,
    "ranks": (list, type(None))}


class _RecordingFile(io.FileIO):
    """A file that keeps the OSError of a failed write: torch.save reports one as a RuntimeError
    that does not say what failed."""

    error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return super().write(data)
        except OSError as err:
            self.error = err
            raise


def _save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder first, so a killed run leaves the previous
    file intact (files.write_file: a failed write is an OutputError naming the path, and its
    temporary file is removed)."""
    def save(tmp: Path) -> None:
        with _RecordingFile(tmp, "wb") as fh:
            try:
                torch.save(obj, fh)
            except RuntimeError:
                if fh.error is not None:
                    raise fh.error from None
                raise
    write_file(path, save)


def _model_entries(model: nn.Module, dataset: str, classes: list[str], epoch: int,
                   best_acc: float, run: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"state_dict": model.state_dict(), "num_classes": len(classes), "dataset": dataset,
            "classes": list(classes), "epoch": epoch, "best_acc": best_acc,
            **({RUN: dict(run)} if run is not None else {})}


def save_model(path: Path, model: nn.Module, *, dataset: str, classes: list[str], epoch: int,
               best_acc: float, run: Mapping[str, Any] | None = None) -> None:
    """The model and its metadata (best.pt): what predict and evaluate need, and the run's
    record (RUN: training.record.run_record makes it)."""
    _save_atomic(_model_entries(model, dataset, classes, epoch, best_acc, run), path)


def save_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any, *, dataset: str, classes: list[str], epoch: int,
                        best_acc: float, best_epoch: int, options: Mapping[str, Any] | None = None,
                        run: Mapping[str, Any] | None = None, step: int = 0, samples: int = 0,
                        ranks: list[Any] | None = None) -> None:
    """The model, its metadata, the optimiser and schedule state, the run's options (last.pt),
    for --resume, and the run's record; within an epoch, MID_EPOCH_STATE too."""
    _save_atomic({**_model_entries(model, dataset, classes, epoch, best_acc, run), "best_epoch": best_epoch,
                  "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                  "options": dict(options) if options is not None else None,
                  **({"step": step, "samples": samples, "ranks": ranks} if step else {})}, path)


def check_entries(obj: Mapping[str, Any], path: Any, names: tuple[str, ...]) -> None:
    """CheckpointError naming `path` unless each of `names` present in `obj` has its ENTRY_TYPES
    type (RUN: a run record or None), the class count is one a model has (checks.NUM_CLASSES),
    and the class names are distinct, non-empty strings, one per class."""
    for name in names:
        if name == RUN:
            _check_run(obj.get(RUN), path)
        elif name in obj and (not isinstance(obj[name], ENTRY_TYPES[name]) or isinstance(obj[name], bool)):
            raise CheckpointError(f"{path}: entry {name!r} should be {ENTRY_TYPES[name]}, found "
                                  f"{type(obj[name]).__name__}")
    try:
        if obj.get("num_classes") is not None:
            NUM_CLASSES.check("num_classes", obj["num_classes"])
        classes = obj.get("classes")
        if classes is not None:
            if not all(isinstance(c, str) for c in classes):
                raise ValueError(f"classes: expected class names, found {list(classes)[:8]}")
            check_names("classes", list(classes))
            if obj.get("num_classes") is not None and len(classes) != obj["num_classes"]:
                raise ValueError(f"classes: {len(classes)} names for num_classes {obj['num_classes']}")
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: entry {err}") from None


def _check_run(record: Any, path: Any) -> None:
    """A run record (check_record) or None."""
    if record is None:
        return
    try:
        check_record(record)
    except ValueError as err:
        raise CheckpointError(f"{path}: entry {RUN!r} is not the record of a training run: {err}") from None


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """A training state written by save_training_state, checked for the entries --resume uses."""
    obj = read_checkpoint(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: not a training state written by poster-fast train (last.pt): "
                              f"found {type(obj).__name__}")
    missing = [k for k in ("state_dict", *MODEL_META, *TRAINING_STATE) if k not in obj]
    if missing:
        hint = " (a best.pt holds the model only: resume from last.pt)" if "state_dict" in obj else ""
        raise CheckpointError(f"{path}: not a training state written by poster-fast train "
                              f"(last.pt): missing {', '.join(missing)}{hint}")
    check_entries(obj, path, tuple(ENTRY_TYPES))
    state_dict_of(obj, str(path))
    return dict(obj)


# ----------------------------------------------------------------------------- the run record

RECORD_FORMAT = 2
# The entries every record holds, with their types (check_record).
RECORD_ENTRIES: dict[str, type | tuple[type, ...]] = {
    "format": int, "options": dict, "seed": int, "versions": dict, "device": dict, "data": dict,
    "resumes": list, "launch": dict}
# Entries that records of an older format lack: name -> the format that added it. "launch": the
# session that wrote the file (world size, nodes, accumulation, global batch, SyncBatchNorm,
# torchrun's restart count, start time); format 2 also adds to each resume its step, time,
# torchrun restart count and world size.
RECORD_ADDED = {"launch": 2}


def check_record(record: Any) -> None:
    """Raise ValueError saying what is wrong unless `record` has the entries a run record holds
    (RECORD_ENTRIES, each of its type, and well-formed resumes)."""
    if not isinstance(record, Mapping):
        raise ValueError(f"expected a dict, found {type(record).__name__}")
    for name, kind in RECORD_ENTRIES.items():
        if name not in record and isinstance(record.get("format"), int) \
                and record["format"] < RECORD_ADDED.get(name, 1):
            continue
        if name not in record:
            raise ValueError(f"the entry {name!r} is missing")
        if not isinstance(record[name], kind) or isinstance(record[name], bool):
            raise ValueError(f"the entry {name!r} should be {kind.__name__}, found "
                             f"{type(record[name]).__name__}")
    for entry in record["resumes"]:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("changes"), Mapping) \
                or not all(isinstance(c, (list, tuple)) and len(c) == 2 for c in entry["changes"].values()):
            raise ValueError(f"the entry 'resumes' should hold resumes {{'from', 'after_epoch', 'changes': "
                             f"{{option: [was, now]}}}}, found {entry!r:.80}")


def _resolved(record: Mapping[str, Any], name: str) -> str:
    value = (record.get("resolved") or {}).get(name)
    return f" ({value})" if value is not None and value != record["options"].get(name) else ""


def _counts(split: Mapping[str, Any]) -> str:
    per_class = split.get("per_class") or {}
    return f"{split.get('images')} ({', '.join(f'{c} {n}' for c, n in per_class.items())})"


def describe_record(record: Mapping[str, Any] | None) -> list[str]:
    """A run record as a few lines for stderr: the options that matter, the seed, versions, device
    and data (for None, one line saying the file records no run)."""
    if record is None:
        return ["run: the checkpoint records no training run (options, seed, versions, data): "
                "the authors' files and files from before poster_fast recorded runs have none"]
    o, dev, data = record["options"], record["device"], record["data"]
    v = {k: "none" if value is None else value for k, value in record["versions"].items()}
    lines = [
        f"run options: {o.get('dataset')}, {o.get('optimizer')} lr {o.get('lr')} weight decay "
        f"{o.get('weight_decay')} rho {o.get('rho')} gamma {o.get('gamma')}, batch {o.get('batch_size')}, "
        f"{o.get('epochs')} epochs, image size {o.get('image_size')}, sampler {o.get('sampler')}"
        f"{_resolved(record, 'sampler')}, amp {o.get('amp')}{_resolved(record, 'amp')}, attn backend "
        f"{o.get('attn_backend')}, seed {record['seed']}",
        f"run versions: poster_fast {v.get('poster_fast')}, torch {v.get('torch')}, Python {v.get('python')}, "
        f"CUDA {v.get('cuda')}, cuDNN {v.get('cudnn')}, Triton {v.get('triton')}; device {dev.get('device')} "
        f"({dev.get('name')}), world size {dev.get('world_size')}",
        f"run data: {data.get('root')}: " + "; ".join(
            f"{name} {_counts(split)}" for name, split in (data.get("splits") or {}).items())]
    launch = record.get("launch")
    if launch:
        lines.append(
            f"run launch: world size {launch.get('world_size')} on {launch.get('nodes')} node(s), global batch "
            f"{launch.get('global_batch')} = {launch.get('world_size')} processes x {launch.get('accum_steps')} "
            f"accumulation steps x {launch.get('batch_per_process')} images, SyncBatchNorm "
            f"{'on' if launch.get('sync_bn') else 'off'}, started {launch.get('started')}"
            + (f" (torchrun restart {launch['restart']})" if launch.get("restart") else ""))
    for r in record["resumes"]:
        changes = "; ".join(f"--{k.replace('_', '-')} {now} (was {was})" for k, (was, now) in r["changes"].items())
        where = f"after epoch {r.get('after_epoch')}" + (f", step {r['step']}" if r.get("step") else "")
        when = (f" at {r['at']}" if r.get("at") else "") + \
            (f" (torchrun restart {r['restart']})" if r.get("restart") else "")
        lines.append(f"run resumed from {r.get('from')} {where}{when}" + (f": {changes}" if changes else ""))
    return lines
