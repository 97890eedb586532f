"""Output files: checked (and their folders created) before any work, written atomically, and
never written over an input (standard library only).

`atomic_path(path)` hands out a temporary name in the destination's folder and renames it onto
`path` only once the writer has finished, so a killed or failed write leaves the previous file
(or none) instead of a truncated one; the temporary file is removed on failure, and
`remove_stale_temps` removes those of a killed process.
"""
from __future__ import annotations

import glob
import json
import math
import os
import secrets
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import UsageError


def same_file(a: Path, b: Path) -> bool:
    with suppress(OSError):
        return a.resolve() == b.resolve()
    return False


@contextmanager
def _as_usage_error(option: str, path: Path) -> Iterator[None]:
    """An OSError while looking at `path` (a name too long, a permission) as a UsageError."""
    try:
        yield
    except OSError as err:
        raise UsageError(f"{option} {path}: {err.strerror or err}") from None


def make_folder(option: str, folder: Path) -> Path:
    """Create `folder` (and its parents); UsageError naming `option` when a file is in the way,
    it cannot be created or it is not writable."""
    with _as_usage_error(option, folder):
        for above in (folder, *folder.parents):
            if above.exists() or above.is_symlink():
                if not above.is_dir():
                    what = "is a file" if above == folder else f"is under {above}, which is a file"
                    raise UsageError(f"{option} {folder}: {what}; expected a folder")
                break
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"{option} {folder}: the folder is not writable")
    return folder


def check_output_file(option: str, path: str | os.PathLike, protected: Iterable[Path] = ()) -> Path:
    """A file a command will write: not a folder, not one of `protected` (its inputs); its
    folder is created."""
    out = Path(path)
    with _as_usage_error(option, out):
        if out.is_dir():
            raise UsageError(f"{option} {out}: is a folder; expected a file name")
        if any(same_file(out, p) for p in protected):
            raise UsageError(f"{option} {out}: is one of the input files; it would be overwritten")
    make_folder(option, out.parent)
    return out


def check_output_dir(option: str, path: str | os.PathLike) -> Path:
    """A folder a command will write into, created."""
    return make_folder(option, Path(path))


def check_input(option: str, path: str | os.PathLike, folder: bool = False) -> Path:
    """An existing file (or folder) to read; UsageError naming `option` otherwise."""
    p = Path(path)
    with _as_usage_error(option, p):
        if not p.exists():
            raise UsageError(f"{option} {p}: does not exist")
        if folder and not p.is_dir():
            raise UsageError(f"{option} {p}: is a file; expected a folder")
        if not folder and p.is_dir():
            raise UsageError(f"{option} {p}: is a folder; expected a file")
        if not os.access(p, os.R_OK | (os.X_OK if folder else 0)):
            raise UsageError(f"{option} {p}: cannot be read (permission denied)")
    return p


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path next to `path` to write to; renamed onto `path` when the block ends,
    removed if it raises. (Writers that pick a format by extension must be told the format.)"""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


def write_text(path: Path, text: str) -> None:
    """Replace `path` with `text`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, obj: Any) -> None:
    """Replace `path` atomically with `obj` as JSON (json_text: indented, non-finite numbers as null)."""
    write_text(path, json_text(obj))


def finite_json(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None, so that it is valid JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def json_text(obj: Any) -> str:
    """`obj` as indented, valid JSON (non-finite numbers as null), with a final newline."""
    return json.dumps(finite_json(obj), indent=2, allow_nan=False) + "\n"


def json_line(obj: Any) -> str:
    """`obj` as one line of valid JSON (non-finite numbers as null), with its newline."""
    return json.dumps(finite_json(obj), allow_nan=False, separators=(",", ":")) + "\n"


class LineFile:
    """A file that grows a line at a time while a run goes, for a program that follows it (`tail -F`,
    a line reader): it is created under a temporary name beside `path` and renamed onto `path`
    before the first line (atomic_path), so that `path` always holds this run's whole lines only;
    each line is then written with one call and reaches the file at once (no buffering)."""

    def __init__(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            self._fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o666)
        self.path = path

    def write(self, line: str) -> None:
        data = line.encode()
        while data:
            data = data[os.write(self._fd, data):]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def remove_stale_temps(folder: Path, names: Iterable[str]) -> list[Path]:
    """Remove what a killed writer left in `folder`: the temporary files of atomic_path
    (NAME.<hex>.tmp) and the older fixed name NAME.tmp, for each NAME; returns those removed."""
    removed = []
    for name in names:
        stem = glob.escape(str(folder / name))
        for tmp in sorted({*glob.glob(stem + ".*.tmp"), *glob.glob(stem + ".tmp")}):
            with suppress(OSError):
                os.unlink(tmp)
                removed.append(Path(tmp))
    return removed
