"""Any file a POSTER V2's weights come in -> the weights of a model, or a model.

`read_state_dict` reads every format: the PyTorch checkpoints of checkpoint.py (ours and the
authors') and the Hugging Face formats of hub.py (safetensors files, save_pretrained folders).
`load_checkpoint` and `load_backbones` load them into a given model, with the authors' loading
rules. `PretrainedMixin` gives POSTERV2 the classmethods that build a model sized from a file
(`from_checkpoint`, `from_pretrained`, `load_trained`, `load_exported`) and `save_pretrained`;
it builds `cls(num_classes, attn_backend=...)`, so this module imports no model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, TypeVar

import torch
from torch import nn

from .checkpoint import (MODEL_META, RUN, THOP_KEY, UNUSED_KEY, check_entries, non_finite, read_checkpoint,
                         source_name, state_dict_of)
from .checks import NUM_CLASSES
from .errors import CheckpointError
from .hub import hub_upload, is_pretrained_dir, is_safetensors, pretrained_folder, read_exported, require_hub
from .hub import save_pretrained as save_pretrained_folder
from .ops import check_backend_name

if TYPE_CHECKING:
    import os

Model = TypeVar("Model", bound="PretrainedMixin")

# face.evoLVe's IR-50 numbers its units body.0..23; the authors' truncated copy has 3 stages.
IR50_STAGE_UNITS = (3, 4, 14)


@dataclass
class LoadReport:
    """What loading a file into a model did: the tensors loaded, the keys dropped (those of
    modules the authors never use; others) and notes."""

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


def read_state_dict(source: Any, trusted: bool = False) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict in any file a model's weights come in.

    Args:
        source: a checkpoint path or file object (ours, the authors'), a safetensors file, a
            save_pretrained folder, or a state dict.
        trusted: also unpickle files holding Python objects besides tensors (checkpoint.read_checkpoint).

    Returns:
        (flat state dict without "module." prefixes, notes on what was changed).
    """
    if isinstance(source, Mapping):
        return state_dict_of(source, "state dict")
    if is_safetensors(source) or is_pretrained_dir(source):
        return state_dict_of(read_exported(source)[0], source_name(source))
    return state_dict_of(read_checkpoint(source, trusted), source_name(source))


def load_checkpoint(model: nn.Module, source: Any, trusted: bool = False) -> LoadReport:
    """Load a POSTER V2 checkpoint into `model`, strictly, after dropping unused and thop keys.

    Args:
        model: a POSTERV2 (or a module with its state-dict names).
        source: any file `read_state_dict` reads, or a state dict.
        trusted: allow files that pickle Python objects besides tensors (runs code the file names).

    Returns:
        What was loaded and dropped.

    Raises:
        CheckpointError: the file cannot be read, or does not fit (naming the class-count
            mismatch or the missing, unexpected and mis-shaped keys).
    """
    state, notes = read_state_dict(source, trusted)
    try:
        return _load_strict(model, state, notes)
    except CheckpointError as err:
        if isinstance(source, Mapping):
            raise
        raise CheckpointError(f"{source_name(source)}: {err}") from None


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
    if head in kept and head in expected and kept[head].dim() == 2 and kept[head].shape[0] != expected[head].shape[0]:
        raise CheckpointError(f"class count mismatch: the checkpoint has {kept[head].shape[0]} classes "
                              f"({head} {tuple(kept[head].shape)}), the model {expected[head].shape[0]}")
    missing = sorted(set(expected) - set(kept))
    unexpected = sorted(set(kept) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(kept[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected if k in kept and kept[k].shape != expected[k].shape]
    dtypes = [f"{k}: checkpoint {kept[k].dtype} vs model {expected[k].dtype}"
              for k in expected if k in kept and not _same_kind(kept[k].dtype, expected[k].dtype)]
    if missing or unexpected or shapes or dtypes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {missing[:10]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {unexpected[:10]}")
        if shapes:
            parts.append(f"{len(shapes)} mis-shaped: {shapes[:10]}")
        if dtypes:
            parts.append(f"{len(dtypes)} of another kind of dtype: {dtypes[:10]}")
        raise CheckpointError("checkpoint does not fit POSTERV2: " + "; ".join(parts))
    bad = non_finite(kept)
    if bad:
        raise CheckpointError(f"{len(bad)} tensors of the checkpoint hold NaN or infinite values "
                              f"(first: {bad[:3]}): the training that wrote it diverged")
    for key in (k for k in kept if k.endswith("relative_position_index")):
        if not torch.equal(kept[key], expected[key]):
            raise CheckpointError(f"{key}: differs from the Swin relative position index this model uses")
    model.load_state_dict(kept, strict=True)
    report.loaded = sorted(kept)
    return report


def _same_kind(found: torch.dtype, expected: torch.dtype) -> bool:
    """A floating-point tensor where the model has one (any precision: the values convert), the
    model's own dtype otherwise (integer buffers). A file whose header gives a weight an integer
    dtype of the same byte size, say, is refused instead of loading its bits as numbers."""
    return found.is_floating_point if expected.is_floating_point else found == expected


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
    bad = non_finite({k: own[k] for k in report.loaded})
    if bad:
        raise CheckpointError(f"{what}: {len(bad)} tensors hold NaN or infinite values (first: {bad[:3]})")
    module.load_state_dict(own)
    missing = sorted(set(own) - set(report.loaded))
    if missing:
        report.notes.append(f"{len(missing)} module tensors not in the file: {missing[:5]}")
    return report


def load_backbones(model: nn.Module, ir50: Any = None, landmark: Any = None,
                   trusted: bool = False) -> dict[str, LoadReport]:
    """Load the authors' pretrained backbone files, copying every tensor whose name and shape match.

    Args:
        model: a POSTERV2.
        ir50: `ir50.pth` (face.evoLVe's numbering body.0..23 is mapped), into `model.ir_back`.
        landmark: `mobilefacenet_model_best.pth.tar`, into `model.face_landback`.
        trusted: allow files that pickle Python objects besides tensors.

    Returns:
        {"ir50": LoadReport, "landmark": LoadReport} for the files given.
    """
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


def _head_classes(state: Mapping[str, torch.Tensor]) -> int:
    """The class count of the state dict's head (7 without one); CheckpointError outside NUM_CLASSES."""
    head = state.get("VIT.head.linear.weight")
    if head is None or head.dim() != 2:
        return 7
    if not NUM_CLASSES.contains(head.shape[0]):
        raise CheckpointError(f"the head VIT.head.linear.weight {tuple(head.shape)} has {head.shape[0]} classes; "
                              f"expected {NUM_CLASSES.describe()}")
    return int(head.shape[0])


def _check_meta(meta: Mapping[str, Any], model: nn.Module, path: Any) -> None:
    """What a file records of its model (checkpoint.check_entries) agrees with its weights: the
    class count, and one name per class."""
    n = model.num_classes
    recorded, classes = meta.get("num_classes"), meta.get("classes")
    if isinstance(recorded, int) and recorded != n:
        raise CheckpointError(f"{source_name(path)}: records num_classes {recorded}, but its weights have {n} "
                              "classes (VIT.head.linear.weight)")
    if isinstance(classes, (list, tuple)) and len(classes) != n:
        raise CheckpointError(f"{source_name(path)}: records {len(classes)} class names, but its weights have "
                              f"{n} classes (VIT.head.linear.weight)")
    check_entries(meta, path, (*MODEL_META, RUN))


class PretrainedMixin:
    """The classmethods of POSTERV2 that build a model from a file, and `save_pretrained`. The
    class is built as `cls(num_classes, attn_backend=...)`."""

    @classmethod
    def from_checkpoint(cls: type[Model], path: Any, num_classes: int | None = None, trusted: bool = False,
                        attn_backend: str = "auto") -> Model:
        """A model whose class count matches the checkpoint (or `num_classes`), loaded from it.

        Args:
            path: any file `read_state_dict` reads (the authors' files as they are), or a state dict.
            num_classes: the class count (default: the checkpoint's head, else 7).
            trusted: allow files that pickle Python objects besides tensors (see load_checkpoint).
            attn_backend: the W-MCSA backend (see poster_fast.ops.explain).

        Returns:
            The model, in training mode as any new module.

        Raises:
            CheckpointError: the file cannot be read or does not fit (see load_checkpoint).
        """
        if num_classes is not None:
            NUM_CLASSES.check("num_classes", num_classes)
        check_backend_name(attn_backend, "attn_backend")
        state, _ = read_state_dict(path, trusted)
        try:
            model = cls(num_classes or _head_classes(state), attn_backend=attn_backend)
            load_checkpoint(model, state)
        except CheckpointError as err:
            if isinstance(path, Mapping):
                raise
            raise CheckpointError(f"{source_name(path)}: {err}") from None
        return model

    @classmethod
    def load_exported(cls: type[Model], source: str | os.PathLike,
                      attn_backend: str = "auto") -> tuple[Model, dict[str, Any]]:
        """A model from a safetensors file or a save_pretrained folder.

        Args:
            source: the file or folder (read without pickle).
            attn_backend: the W-MCSA backend.

        Returns:
            (the model, the file's config: hub.model_config's entries).
        """
        state, config = read_exported(source)
        try:
            model = cls.from_checkpoint(state, attn_backend=attn_backend)
        except CheckpointError as err:
            raise CheckpointError(f"{source_name(source)}: {err}") from None
        _check_meta({k: config[k] for k in (*MODEL_META, RUN) if config.get(k) is not None}, model, source)
        return model, config

    @classmethod
    def load_trained(cls: type[Model], path: str | os.PathLike, trusted: bool = False,
                     attn_backend: str = "auto") -> tuple[Model, dict[str, Any]]:
        """A model sized and loaded from `path`, and what the file records of its training.

        Args:
            path: a file of `poster-fast train` (best.pt, last.pt), an exported file or folder,
                or the authors' checkpoint.
            trusted: allow files that pickle Python objects besides tensors.
            attn_backend: the W-MCSA backend.

        Returns:
            (the model, its metadata: checkpoint.MODEL_META and the run's record under
            checkpoint.RUN where the file has them). Files written by `poster-fast train` have
            them (those written before runs were recorded lack RUN), the authors' files do not.
        """
        if is_safetensors(path) or is_pretrained_dir(path):
            model, config = cls.load_exported(path, attn_backend)
            return model, {k: config[k] for k in (*MODEL_META, RUN) if config.get(k) is not None}
        obj = read_checkpoint(path, trusted)
        state, _ = state_dict_of(obj, str(path))
        meta = ({k: obj[k] for k in MODEL_META if k in obj} | ({RUN: obj[RUN]} if obj.get(RUN) is not None else {})
                if isinstance(obj, Mapping) and "state_dict" in obj else {})
        check_entries(meta, path, (*MODEL_META, RUN))
        try:
            model = cls.from_checkpoint(state, attn_backend=attn_backend)
        except CheckpointError as err:
            raise CheckpointError(f"{path}: {err}") from None
        _check_meta(meta, model, path)
        return model, meta

    @classmethod
    def from_pretrained(cls: type[Model], source: Any, attn_backend: str = "auto") -> Model:
        """The model in a folder written by `save_pretrained`, or in a Hugging Face Hub repository.

        Args:
            source: the folder, or "owner/name" on the Hub when no such folder exists (the
                download needs huggingface_hub).
            attn_backend: the W-MCSA backend.

        Returns:
            The model; its `config` is the folder's config.json (class names: `model.config["classes"]`).
        """
        model, config = cls.load_exported(pretrained_folder(source), attn_backend)
        model.config = config
        return model

    def save_pretrained(self, directory: Any, *, classes: list[str] | None = None, dataset: str | None = None,
                        overwrite: bool = False, repo_id: str | None = None) -> Path:
        """Write `directory`/config.json and model.safetensors (the Hugging Face layout).

        Args:
            directory: the folder, created if its parent exists.
            classes, dataset: recorded in the config; default: those of the config this model
                was loaded with (`from_pretrained`).
            overwrite: replace existing files (refused otherwise).
            repo_id: then upload the folder to this Hugging Face Hub repository (needs huggingface_hub).

        Returns:
            The folder.
        """
        config = getattr(self, "config", {})
        if repo_id is not None:
            require_hub()
        directory = save_pretrained_folder(directory, self, classes=classes or config.get("classes"),
                                           dataset=dataset or config.get("dataset"), recorded=config,
                                           overwrite=overwrite)
        if repo_id is not None:
            hub_upload(directory, repo_id)
        return directory
