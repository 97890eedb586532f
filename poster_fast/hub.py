"""The Hugging Face formats, read and written without pickle, and the Hub's transfers.

A safetensors file holds the state dict (contiguous CPU tensors) with "format": "pt" and each
entry of `model_config` (architecture, classes, dataset, normalisation, version, and what the
trained file recorded: its epoch, best accuracy and run record, checkpoint.RUN), JSON-encoded, as
metadata. The layout `save_pretrained` writes is a folder holding config.json (`model_config`)
and model.safetensors. Downloads and uploads of such folders need huggingface_hub
(poster_fast[hub]). Imports no model (pretrained.py builds one from these files).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .checkpoint import RUN
from .checks import check_names
from .errors import CheckpointError, RunError, UsageError
from .extras import missing, require
from .files import Reads, check_output_file, file_problem, loads_json, open_regular, read_json, write_file, write_json
from .version import __version__

PRETRAINED_CONFIG, PRETRAINED_WEIGHTS = "config.json", "model.safetensors"
ARCHITECTURE = "POSTERV2"
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def check_export_file(path: str | os.PathLike, overwrite: bool = False, name: str = "path",
                      reads: Reads | None = None) -> Path:
    """`path` as a file to write (files.check_output_file): its folder is created; an existing
    file is refused unless `overwrite`, and an input of `reads` always (raises UsageError naming
    `name`, the argument or option)."""
    return check_output_file(name, path, reads, overwrite, "--force" if name.startswith("--") else "overwrite=True")


def check_export_dir(directory: str | os.PathLike, overwrite: bool = False, name: str = "directory",
                     reads: Reads | None = None) -> Path:
    """`directory` as a save_pretrained folder to write, created with its parents; the files it
    would get are checked as check_export_file checks a file."""
    directory = Path(directory)
    try:
        is_file = directory.exists() and not directory.is_dir()
    except OSError as err:
        raise UsageError(f"{name} {directory}: {err.strerror or err}") from None
    if is_file:
        raise UsageError(f"{name} {directory}: is a file; expected a folder for {PRETRAINED_CONFIG} and "
                         f"{PRETRAINED_WEIGHTS}")
    for file in (PRETRAINED_WEIGHTS, PRETRAINED_CONFIG):
        check_export_file(directory / file, overwrite, name, reads)
    return directory


def model_config(model: nn.Module, classes: Sequence[str] | None = None, dataset: str | None = None,
                 recorded: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What an exported model records: architecture, class count and names, dataset, the input
    normalisation, the poster_fast version, and `recorded` (e.g. a best.pt's epoch, best_acc
    and the record of the run that trained it)."""
    from .data.transforms import IMAGENET_MEAN, IMAGENET_STD  # (PIL: only where a config is made)

    num_classes = int(model.num_classes)
    if classes is not None:
        try:
            classes = check_names("classes", classes)
        except (TypeError, ValueError) as err:
            raise UsageError(str(err)) from None
        if len(classes) != num_classes:
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
    """Write the model's state dict as a safetensors file with `model_config` in its metadata.

    Args:
        path: the file; its folder is created.
        model: a POSTERV2.
        classes, dataset, recorded: what the metadata records (see model_config).
        overwrite: replace an existing file (refused otherwise).

    Returns:
        The path written (atomically; files.write_file: OutputError if it cannot be).
    """
    from safetensors.torch import save

    config = model_config(model, classes, dataset, recorded)
    path = check_export_file(path, overwrite)
    metadata = {"format": "pt", **{k: json.dumps(v) for k, v in config.items()}}
    data = save(_contiguous_state(model), metadata=metadata)
    return write_file(path, lambda tmp: tmp.write_bytes(data))


def is_safetensors(source: Any) -> bool:
    """Whether `source` names a regular file that starts like a safetensors file (an 8-byte
    header length, then the JSON header), whatever its suffix."""
    if not isinstance(source, (str, os.PathLike)) or file_problem(source) is not None:
        return False
    with open_regular(source) as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{"


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file without pickle. The safetensors library checks every tensor's
    byte size against its dtype and shape; the loaders check dtypes and shapes against the model
    (pretrained.load_checkpoint).

    Returns:
        (state dict, metadata): entries that are JSON decoded, others kept as strings.

    Raises:
        CheckpointError: the file is not a readable safetensors file, naming it.
    """
    from safetensors import SafetensorError, safe_open

    problem = file_problem(path)
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    config = {}
    for key, text in meta.items():
        try:
            config[key] = loads_json(text)
        except ValueError:
            config[key] = text
    config.pop("format", None)
    return state, config


def save_pretrained(directory: str | os.PathLike, model: nn.Module, *,
                    classes: Sequence[str] | None = None, dataset: str | None = None,
                    recorded: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """The Hugging Face layout: `directory`/config.json (`model_config`) and model.safetensors.

    The folder is created with its parents; existing files in it are refused unless
    `overwrite`. config.json is written last."""
    config = model_config(model, classes, dataset, recorded)
    directory = check_export_dir(directory, overwrite)
    save_safetensors(directory / PRETRAINED_WEIGHTS, model, classes=classes, dataset=dataset,
                     recorded=recorded, overwrite=overwrite)
    write_json(directory / PRETRAINED_CONFIG, config)
    return directory


def is_pretrained_dir(source: Any) -> bool:
    """Whether `source` is a folder holding config.json (of whatever kind: read_pretrained says
    what is wrong with it)."""
    return isinstance(source, (str, os.PathLike)) and Path(source).is_dir() and \
        os.path.lexists(Path(source) / PRETRAINED_CONFIG)


def read_pretrained(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a folder written by save_pretrained.

    Returns:
        (state dict, config.json).

    Raises:
        CheckpointError: the config cannot be read, is not a POSTERV2's, or the weights are missing.
    """
    directory = Path(directory)
    config_file = directory / PRETRAINED_CONFIG
    try:
        config = read_json(config_file)
    except OSError as err:
        raise CheckpointError(f"{config_file}: cannot be read ({err.strerror or err})") from None
    except ValueError as err:
        raise CheckpointError(f"{config_file}: cannot be read as JSON ({err})") from None
    architecture = config.get("architecture") if isinstance(config, dict) else None
    if architecture != ARCHITECTURE:
        raise CheckpointError(f"{config_file}: architecture {architecture!r}, expected {ARCHITECTURE!r}")
    if not os.path.lexists(directory / PRETRAINED_WEIGHTS):
        raise CheckpointError(f"{directory}: {PRETRAINED_WEIGHTS} is missing")
    state, _ = read_safetensors(directory / PRETRAINED_WEIGHTS)
    return state, config


def read_exported(source: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, config) of a safetensors file or a save_pretrained folder."""
    return read_pretrained(source) if is_pretrained_dir(source) else read_safetensors(source)


def exported_files(source: str | os.PathLike) -> list[Path]:
    """The files reading `source` reads: a save_pretrained folder's two files, or `source`."""
    folder = Path(source)
    return [folder / PRETRAINED_CONFIG, folder / PRETRAINED_WEIGHTS] if is_pretrained_dir(source) else [folder]


def require_hub() -> None:
    """Raise MissingExtra naming poster_fast[hub] unless huggingface_hub is installed."""
    require("hub")


def pretrained_folder(source: str | os.PathLike) -> Path:
    """A local save_pretrained folder, or a Hugging Face Hub repository "owner/name" (when no
    such local path exists) downloaded to the Hub's cache."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists() or not REPO_ID.match(str(source)):
        raise CheckpointError(f"{source}: not a folder written by save_pretrained")
    if missing("hub"):
        raise CheckpointError(f"{source}: no such folder (to download it from the Hugging Face Hub, "
                              f"install huggingface_hub: pip install 'poster_fast[hub]')")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=str(source), allow_patterns=[PRETRAINED_CONFIG, PRETRAINED_WEIGHTS]))
    except Exception as err:  # huggingface_hub's errors: offline, no such repository, no access, ...
        raise CheckpointError(f"{source}: no such folder, and it cannot be downloaded from the Hugging Face Hub "
                              f"({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None


def hub_upload(directory: str | os.PathLike, repo_id: str) -> None:
    """Upload a save_pretrained folder's two files to the Hub repository `repo_id` (created if
    needed; the Hub's login applies). A failed upload (offline, no login, no access) is a
    RunError naming the repository; the folder stays as written."""
    require_hub()
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(directory),
                          allow_patterns=[PRETRAINED_CONFIG, PRETRAINED_WEIGHTS])
    except Exception as err:  # huggingface_hub's errors: offline, not logged in, no access, ...
        raise RunError(f"cannot upload {directory} to the Hugging Face Hub repository {repo_id} "
                       f"({type(err).__name__}: {' '.join(str(err).split())[:200]}); the folder is written") from None
