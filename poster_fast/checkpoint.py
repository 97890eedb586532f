"""Every checkpoint format: the authors' files (trained POSTER V2 checkpoints and the two
pretrained backbones) and the files `poster-fast train` writes.

The authors' files are accepted as they are: a dict holding "state_dict" or a bare state dict,
"module." prefixes from DataParallel, the 36 keys of modules the authors build but never use
(dropped and reported), and `total_ops`/`total_params` entries that thop leaves behind.

Ours (best.pt, last.pt) are dicts that `torch.load(weights_only=True)` reads: "state_dict"
(no "module." prefixes) with the metadata MODEL_META; the training state (last.pt) adds
TRAINING_STATE, what `--resume` needs.

Exported files, read without pickle: safetensors files and the folders `save_pretrained` writes
(config.json + model.safetensors), at the end of this module.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from torch import nn

from .errors import CheckpointError, UsageError
from .files import atomic_path

if TYPE_CHECKING:
    from .model import POSTERV2

# Modules of the authors' model that never influence the logits; not built here.
UNUSED_KEY = re.compile(
    r"^(face_landback\.output_layer\.|ir_back\.output_layer\.|VIT\.(patch_embed|eca_block|CON1|"
    r"IRLinear1|IRLinear2)\.|VIT\.blocks\.\d+\.conv\.)")
THOP_KEY = re.compile(r"(^|\.)(total_ops|total_params)$")
# face.evoLVe's IR-50 numbers its units body.0..23; the authors' truncated copy has 3 stages.
IR50_STAGE_UNITS = (3, 4, 14)


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    dropped_unused: list[str] = field(default_factory=list)
    dropped_other: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.dropped_unused:
            lines.append(f"dropped {len(self.dropped_unused)} keys of modules the authors never use")
        if self.dropped_other:
            lines.append(f"dropped {len(self.dropped_other)} other keys: {self.dropped_other[:5]}")
        return "; ".join(lines + self.notes)


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


def _name(source: Any) -> str:
    """How error messages name a checkpoint source."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", None) if isinstance(getattr(source, "name", None), str) else "the file object"


def _head(source: Any) -> bytes:
    """The first bytes of a checkpoint file ('' when they cannot be read)."""
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as fh:
                return fh.read(4)
        position = source.tell()
        head = source.read(4)
        source.seek(position)
        return head if isinstance(head, bytes) else b""
    except (OSError, AttributeError, ValueError):
        return b""


def _cause(err: BaseException, source: Any) -> str:
    """What a failed torch.load says about the file, in one line."""
    text = " ".join(str(err).split())
    if _head(source) == b"PK\x03\x04" or "central directory" in text:
        return f"a damaged zip archive (truncated or corrupt; {type(err).__name__}: {text[:100]})"
    if isinstance(err, EOFError) or "Ran out of input" in text:
        return "the file ends too early (truncated, or not a checkpoint)"
    if "magic number" in text:
        return "not a PyTorch checkpoint (invalid magic number)"
    return f"not a PyTorch checkpoint, or a corrupt one ({type(err).__name__}: {text[:160]})"


def _check_file(path: str | os.PathLike) -> None:
    p = Path(path)
    try:
        _check_path(p)
    except OSError as err:
        raise CheckpointError(f"{p}: {err.strerror or err}") from None


def _check_path(p: Path) -> None:
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder, not a checkpoint file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: the file is empty (0 bytes)")
    if not os.access(p, os.R_OK):
        raise CheckpointError(f"{p}: cannot be read (permission denied)")


def read_checkpoint(source: str | os.PathLike | io.IOBase, trusted: bool = False) -> Any:
    """The object a checkpoint file (path or file object) holds, read with
    `torch.load(weights_only=True)`; with `trusted`, files that pickle other Python objects too
    (unpickling runs code from the file; unknown classes become placeholders). Every failure
    is a CheckpointError naming the file and the cause."""
    name = _name(source)
    if isinstance(source, (str, os.PathLike)):
        _check_file(source)
    elif not hasattr(source, "read"):
        raise CheckpointError(f"expected a checkpoint path, file object or state dict, got "
                              f"{type(source).__name__}")
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "Weights only load failed" not in text:
            raise CheckpointError(f"{name}: {_cause(err, source)}") from err
        if not trusted:
            detail = next((line.strip() for line in text.splitlines() if "Unsupported global" in line), "")
            if not detail:
                raise CheckpointError(f"{name}: {_cause(err, source)}") from err
            raise CheckpointError(
                f"{name}: the file holds pickled Python objects besides tensors, which "
                f"torch.load(weights_only=True) refuses ({detail}). The authors' training checkpoints "
                "are like this. If you trust the file, pass trusted=True (CLI: --trusted) to unpickle "
                "it, which runs code the file names; unknown classes become placeholders."
            ) from err
    except Exception as err:  # torch.load raises many types for damaged files
        raise CheckpointError(f"{name}: {_cause(err, source)}") from err
    if hasattr(source, "seek"):
        source.seek(0)
    try:
        return torch.load(source, map_location="cpu", weights_only=False, pickle_module=_LenientPickle)
    except Exception as err:
        raise CheckpointError(f"{name}: {_cause(err, source)}") from err


def _state_of(obj: Any, name: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The flat state dict (without "module." prefixes) in a loaded checkpoint object."""
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


def read_state_dict(source: Any, trusted: bool = False) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A file path, file object or mapping -> (flat state dict without "module." prefixes, notes)."""
    if isinstance(source, Mapping):
        return _state_of(source, "state dict")
    if is_safetensors(source) or is_pretrained_dir(source):
        return _state_of(read_exported(source)[0], _name(source))
    return _state_of(read_checkpoint(source, trusted), _name(source))


def _non_finite(state: Mapping[str, torch.Tensor]) -> list[str]:
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def load_checkpoint(model: nn.Module, source: Any, trusted: bool = False) -> LoadReport:
    """Load a POSTER V2 checkpoint into `model`, strictly, after dropping unused/thop keys.

    Raises CheckpointError naming the class-count mismatch or the missing, unexpected and
    mis-shaped keys. Returns what was loaded and dropped.
    """
    state, notes = read_state_dict(source, trusted)
    try:
        return _load_strict(model, state, notes)
    except CheckpointError as err:
        if isinstance(source, Mapping):
            raise
        raise CheckpointError(f"{_name(source)}: {err}") from None


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], notes: list[str]) -> LoadReport:
    report = LoadReport(notes=notes)
    expected = model.state_dict()
    kept = {}
    for key, value in state.items():
        if UNUSED_KEY.match(key):
            report.dropped_unused.append(key)
        elif THOP_KEY.search(key):
            report.dropped_other.append(key)
        else:
            kept[key] = value
    head = "VIT.head.linear.weight"
    if head in kept and head in expected and kept[head].dim() == 2 and kept[head].shape != expected[head].shape:
        raise CheckpointError(f"class count mismatch: the checkpoint has {kept[head].shape[0]} classes "
                              f"({head} {tuple(kept[head].shape)}), the model {expected[head].shape[0]}")
    bad = _non_finite(kept)
    if bad:
        raise CheckpointError(f"{len(bad)} tensors of the checkpoint hold NaN or infinite values "
                              f"(first: {bad[:3]}): the training that wrote it diverged")
    missing = sorted(set(expected) - set(kept))
    unexpected = sorted(set(kept) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(kept[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected if k in kept and kept[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {missing[:10]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {unexpected[:10]}")
        if shapes:
            parts.append(f"{len(shapes)} mis-shaped: {shapes[:10]}")
        raise CheckpointError("checkpoint does not fit POSTERV2: " + "; ".join(parts))
    for key in (k for k in kept if k.endswith("relative_position_index")):
        if not torch.equal(kept[key], expected[key]):
            raise CheckpointError(f"{key}: differs from the Swin relative position index this model uses")
    model.load_state_dict(kept, strict=True)
    report.loaded = sorted(kept)
    return report


def _ir50_key(key: str) -> str:
    """Map face.evoLVe IR-50 unit keys body.<i>.* to the truncated model's body<stage>.<j>.*."""
    match = re.match(r"^body\.(\d+)\.(.*)$", key)
    if not match:
        return key
    unit, rest = int(match.group(1)), match.group(2)
    for stage, units in enumerate(IR50_STAGE_UNITS, start=1):
        if unit < units:
            return f"body{stage}.{unit}.{rest}"
        unit -= units
    return key


def _load_matching(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> LoadReport:
    """Copy every tensor whose name and shape match (the authors' loading rule); report the rest."""
    report = LoadReport()
    own = module.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape == value.shape:
            own[key] = value
            report.loaded.append(key)
        else:
            report.dropped_other.append(key)
    if not report.loaded:
        raise CheckpointError(f"{what}: no tensor of the file matches the module (first keys: "
                              f"{list(state)[:5]})")
    bad = _non_finite({k: own[k] for k in report.loaded})
    if bad:
        raise CheckpointError(f"{what}: {len(bad)} tensors hold NaN or infinite values (first: {bad[:3]})")
    module.load_state_dict(own)
    missing = sorted(set(own) - set(report.loaded))
    if missing:
        report.notes.append(f"{len(missing)} module tensors not in the file: {missing[:5]}")
    return report


def load_backbones(model: nn.Module, ir50: Any = None, landmark: Any = None,
                   trusted: bool = False) -> dict[str, LoadReport]:
    """Load the authors' pretrained backbone files: `ir50.pth` into `model.ir_back` and
    `mobilefacenet_model_best.pth.tar` into `model.face_landback`."""
    reports = {}
    if ir50 is not None:
        state, _ = read_state_dict(ir50, trusted)
        if not any(k.startswith(("body1.", "body2.", "body3.")) for k in state):
            state = {_ir50_key(k): v for k, v in state.items()}
        reports["ir50"] = _load_matching(model.ir_back, state, f"ir50 file {ir50}")
    if landmark is not None:
        state, _ = read_state_dict(landmark, trusted)
        state = {k: v for k, v in state.items() if not k.startswith("output_layer.")}
        reports["landmark"] = _load_matching(model.face_landback, state, f"landmark file {landmark}")
    return reports


# ----------------------------------------------------------------------------- our files

MODEL_META = ("num_classes", "dataset", "classes", "epoch", "best_acc")
TRAINING_STATE = ("best_epoch", "optimizer", "scheduler")
RUN = "run"  # the run's record (training.record), optional: older files lack it
# The type of each entry of our files; "options" (the run's TrainOptions, for --resume) and
# "run" are optional: files written before they were recorded lack them.
ENTRY_TYPES: dict[str, type | tuple[type, ...]] = {
    "state_dict": Mapping, "num_classes": int, "dataset": str, "classes": (list, tuple), "epoch": int,
    "best_acc": (int, float), "best_epoch": int, "optimizer": Mapping, "scheduler": Mapping,
    "options": (Mapping, type(None)), RUN: (Mapping, type(None))}


def _save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder first, so a killed run leaves the previous
    file intact (and a failed write removes its temporary file)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _model_entries(model: nn.Module, dataset: str, classes: list[str], epoch: int,
                   best_acc: float, run: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"state_dict": model.state_dict(), "num_classes": len(classes), "dataset": dataset,
            "classes": list(classes), "epoch": epoch, "best_acc": best_acc,
            **({RUN: dict(run)} if run is not None else {})}


def save_model(path: Path, model: nn.Module, *, dataset: str, classes: list[str], epoch: int,
               best_acc: float, run: Mapping[str, Any] | None = None) -> None:
    """The model and its metadata (best.pt): what predict and evaluate need, and the run's
    record (training.record.run_record)."""
    _save_atomic(_model_entries(model, dataset, classes, epoch, best_acc, run), path)


def save_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any, *, dataset: str, classes: list[str], epoch: int,
                        best_acc: float, best_epoch: int, options: Mapping[str, Any] | None = None,
                        run: Mapping[str, Any] | None = None) -> None:
    """The model, its metadata, the optimiser and schedule state, the run's options (last.pt),
    for --resume, and the run's record."""
    _save_atomic({**_model_entries(model, dataset, classes, epoch, best_acc, run), "best_epoch": best_epoch,
                  "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                  "options": dict(options) if options is not None else None}, path)


def _check_entries(obj: Mapping[str, Any], path: Any, names: tuple[str, ...]) -> None:
    """Each of `names` present in `obj` has its ENTRY_TYPES type (RUN: a run record or None);
    class names are strings."""
    for name in names:
        if name == RUN:
            _check_run(obj.get(RUN), path)
        elif name in obj and (not isinstance(obj[name], ENTRY_TYPES[name]) or isinstance(obj[name], bool)):
            raise CheckpointError(f"{path}: entry {name!r} should be {ENTRY_TYPES[name]}, found "
                                  f"{type(obj[name]).__name__}")
    classes = obj.get("classes")
    if classes is not None and not all(isinstance(c, str) for c in classes):
        raise CheckpointError(f"{path}: entry 'classes' should hold class names, found {list(classes)[:8]}")


def _check_run(record: Any, path: Any) -> None:
    """A run record (training.record.check_record) or None."""
    from .training.record import check_record

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
    _check_entries(obj, path, tuple(ENTRY_TYPES))
    _state_of(obj, str(path))
    return dict(obj)


def load_trained(path: str | os.PathLike, trusted: bool = False,
                 attn_backend: str = "auto") -> tuple["POSTERV2", dict[str, Any]]:
    """A POSTERV2 sized and loaded from `path`, and the file's metadata (MODEL_META, and the
    run's record under RUN) where it has any: files written by `poster-fast train` do (those
    written before runs were recorded lack RUN), the authors' files do not."""
    from .model import POSTERV2

    if is_safetensors(path) or is_pretrained_dir(path):
        model, config = load_exported(path, attn_backend)
        meta = {k: config[k] for k in (*MODEL_META, RUN) if config.get(k) is not None}
        _check_entries(meta, path, (*MODEL_META, RUN))
        return model, meta
    obj = read_checkpoint(path, trusted)
    state, _ = _state_of(obj, str(path))
    meta = ({k: obj[k] for k in MODEL_META if k in obj} | ({RUN: obj[RUN]} if obj.get(RUN) is not None else {})
            if isinstance(obj, Mapping) and "state_dict" in obj else {})
    _check_entries(meta, path, (*MODEL_META, RUN))
    try:
        model = POSTERV2.from_checkpoint(state, attn_backend=attn_backend)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return model, meta


# ----------------------------------------------------------------------------- exported files
# A safetensors file (contiguous CPU tensors; metadata: "format": "pt" and each entry of
# `model_config`, JSON-encoded) and the Hugging Face layout save_pretrained writes: a folder
# holding config.json (`model_config`) and model.safetensors. Both are read without pickle.

PRETRAINED_CONFIG, PRETRAINED_WEIGHTS = "config.json", "model.safetensors"
ARCHITECTURE = "POSTERV2"


def check_export_file(path: str | os.PathLike, overwrite: bool = False, name: str = "path") -> Path:
    """`path` as a file to write: its folder must exist, and an existing file is refused unless
    `overwrite` (raises UsageError naming `name`, the argument or option)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise UsageError(f"{name} {path} is a folder: expected a file name")
        if not path.parent.is_dir():
            raise UsageError(f"{name} {path}: the folder {path.parent} does not exist")
        if path.exists() and not overwrite:
            raise UsageError(f"{name} {path} exists: not overwriting it (overwrite=True; command line: --force)")
    except OSError as err:  # a name too long, a permission
        raise UsageError(f"{name} {path}: {err.strerror or err}") from None
    return path


def check_export_dir(directory: str | os.PathLike, overwrite: bool = False, name: str = "directory") -> Path:
    """`directory` as a save_pretrained folder to write: it or its parent must exist, and the
    files it would get are refused unless `overwrite` (raises UsageError naming `name`)."""
    directory = Path(directory)
    try:
        if directory.exists() and not directory.is_dir():
            raise UsageError(f"{name} {directory} is a file: expected a folder for {PRETRAINED_CONFIG} and "
                             f"{PRETRAINED_WEIGHTS}")
        if not directory.parent.is_dir():
            raise UsageError(f"{name} {directory}: the folder {directory.parent} does not exist")
        is_dir = directory.is_dir()
    except OSError as err:
        raise UsageError(f"{name} {directory}: {err.strerror or err}") from None
    if is_dir:
        for file in (PRETRAINED_WEIGHTS, PRETRAINED_CONFIG):
            check_export_file(directory / file, overwrite, name)
    return directory


def model_config(model: nn.Module, classes: Sequence[str] | None = None, dataset: str | None = None,
                 recorded: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What an exported model records: architecture, class count and names, dataset, the input
    normalisation, the poster_fast version, and `recorded` (e.g. a best.pt's epoch, best_acc
    and the record of the run that trained it)."""
    from .version import __version__
    from .data.transforms import IMAGENET_MEAN, IMAGENET_STD

    num_classes = int(model.num_classes)
    if classes is not None and len(classes) != num_classes:
        raise UsageError(f"classes: expected {num_classes} names (the model's outputs), got {len(classes)}")
    return {**{k: v for k, v in (recorded or {}).items() if k in ("epoch", "best_acc", RUN) and v is not None},
            "architecture": ARCHITECTURE, "num_classes": num_classes,
            "classes": list(classes) if classes is not None else None, "dataset": dataset,
            "input": "(B, 3, H, W) RGB in [0, 1], normalised with mean and std",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "poster_fast_version": __version__}


def _contiguous_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors (training leaves channels-last weights)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_safetensors(path: str | os.PathLike, model: nn.Module, *, classes: Sequence[str] | None = None,
                     dataset: str | None = None, recorded: Mapping[str, Any] | None = None,
                     overwrite: bool = False) -> Path:
    """The model's state dict as a safetensors file with `model_config` in its metadata."""
    from safetensors.torch import save

    path = check_export_file(path, overwrite)
    config = model_config(model, classes, dataset, recorded)
    metadata = {"format": "pt", **{k: json.dumps(v) for k, v in config.items()}}
    with atomic_path(path) as tmp:
        tmp.write_bytes(save(_contiguous_state(model), metadata=metadata))
    return path


def is_safetensors(source: Any) -> bool:
    """Whether `source` names a file that starts like a safetensors file (an 8-byte header
    length, then the JSON header), whatever its suffix."""
    if not isinstance(source, (str, os.PathLike)) or not Path(source).is_file():
        return False
    with open(source, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{"


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, metadata): entries that are JSON decoded, others kept as strings."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    config = {}
    for key, text in meta.items():
        try:
            config[key] = json.loads(text)
        except ValueError:
            config[key] = text
    config.pop("format", None)
    return state, config


def save_pretrained(directory: str | os.PathLike, model: nn.Module, *,
                    classes: Sequence[str] | None = None, dataset: str | None = None,
                    recorded: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """The Hugging Face layout: `directory`/config.json (`model_config`) and model.safetensors.

    The folder is created if its parent exists; existing files in it are refused unless
    `overwrite`. config.json is written last."""
    directory = check_export_dir(directory, overwrite)
    config = model_config(model, classes, dataset, recorded)
    directory.mkdir(exist_ok=True)
    save_safetensors(directory / PRETRAINED_WEIGHTS, model, classes=classes, dataset=dataset,
                     recorded=recorded, overwrite=overwrite)
    with atomic_path(directory / PRETRAINED_CONFIG) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    return directory


def is_pretrained_dir(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike)) and (Path(source) / PRETRAINED_CONFIG).is_file()


def read_pretrained(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, config.json) of a folder written by save_pretrained."""
    directory = Path(directory)
    try:
        config = json.loads((directory / PRETRAINED_CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{directory / PRETRAINED_CONFIG}: cannot be read as JSON ({err})") from err
    architecture = config.get("architecture") if isinstance(config, dict) else None
    if architecture != ARCHITECTURE:
        raise CheckpointError(f"{directory / PRETRAINED_CONFIG}: architecture {architecture!r}, "
                              f"expected {ARCHITECTURE!r}")
    if not (directory / PRETRAINED_WEIGHTS).is_file():
        raise CheckpointError(f"{directory}: {PRETRAINED_WEIGHTS} is missing")
    state, _ = read_safetensors(directory / PRETRAINED_WEIGHTS)
    return state, config


def read_exported(source: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, config) of a safetensors file or a save_pretrained folder."""
    return read_pretrained(source) if is_pretrained_dir(source) else read_safetensors(source)


def load_exported(source: str | os.PathLike,
                  attn_backend: str = "auto") -> tuple["POSTERV2", dict[str, Any]]:
    """A POSTERV2 from a safetensors file or a save_pretrained folder, and its config."""
    from .model import POSTERV2

    state, config = read_exported(source)
    return POSTERV2.from_checkpoint(state, attn_backend=attn_backend), config
