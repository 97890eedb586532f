"""The files a command reads and writes, by one set of rules (standard library only).

- Inputs: `Reads` holds the files a command reads and the data folders whose files it reads.
  Every output is checked against it: the same file is the same device and inode (so a hard or
  symbolic link to an input is that input) or the same resolved path. No output is ever written
  over an input, not even with --force, and no output folder lies inside a data folder.
- Special files: a named pipe, socket or device is never opened to be read (opening a FIFO waits
  for a writer forever): `file_problem` says what a path is, `open_regular` opens only regular
  files, without blocking even when a FIFO takes a file's place between the look and the open.
- Outputs (`check_output_file`, `check_output_dir`), checked before any work: a file is not a
  folder, a special file or an input, and an existing file is refused unless `force`; its folder
  is created and must take a new file (a probe file is created and removed there).
- Writing (`write_file`, the one writer): into a temporary file beside the destination, renamed
  onto it when complete, so a killed or failed write leaves the previous file (or none); every
  OSError becomes an `OutputError` naming the path (exit status 3). Temporary names fit the file
  system's limit on a name (255 bytes) however long the destination's name; `remove_stale_temps`
  removes those a killed process left.
"""
from __future__ import annotations

import glob
import json
import math
import os
import secrets
import stat
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from .errors import OutputError, UsageError

NAME_MAX = 255  # bytes in a file name (Linux and macOS file systems), where os.pathconf does not say
_SPECIAL = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
            (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


# ----------------------------------------------------------------------------- reading

def special_kind(mode: int) -> str | None:
    """'a named pipe (FIFO)', 'a socket', ... for a special file's st_mode; None otherwise."""
    return next((kind for test, kind in _SPECIAL if test(mode)), None)


class SpecialFileError(OSError):
    """A path that names a FIFO, socket or device where a regular file is read."""

    def __init__(self, path: str | os.PathLike, kind: str) -> None:
        super().__init__(0, f"{kind}, not a regular file", str(path))

    def __str__(self) -> str:
        return self.strerror


def file_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be read as a regular file (missing, a broken link, a folder, a special
    file, unreadable), in a few words; None when it can be. Looks without opening it."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        return "a link to nothing (broken symbolic link)" if p.is_symlink() else "does not exist"
    except OSError as err:
        return f"cannot be read: {err.strerror or err}"
    kind = special_kind(mode)
    if kind:
        return f"is {kind}, not a regular file"
    if stat.S_ISDIR(mode):
        return "is a folder"
    if not os.access(p, os.R_OK):
        return "cannot be read (permission denied)"
    return None


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """`path` opened for reading (binary) if it is a regular file. A special file is refused
    before it is opened (SpecialFileError), and the open itself does not block (O_NONBLOCK, then
    fstat), so a FIFO put in the file's place meanwhile is refused too. Other failures: OSError."""
    kind = special_kind(os.stat(path).st_mode)
    if kind:
        raise SpecialFileError(path, kind)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        kind = special_kind(mode)
        if kind:
            raise SpecialFileError(path, kind)
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "is a folder", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def loads_json(text: str | bytes) -> Any:
    """json.loads, with nesting too deep for the parser a ValueError like any other bad JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to be read") from None


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in a regular file (open_regular; loads_json). OSError, or ValueError saying why
    it is not JSON."""
    with open_regular(path) as fh:
        data = fh.read()
    try:
        return loads_json(data)
    except UnicodeDecodeError as err:
        raise ValueError(f"not text: {err.reason}") from None


def _key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class Reads:
    """The files a command reads and the data folders whose files it reads (see the module
    docstring): what no output may be, or lie in."""

    def __init__(self, files: Iterable[str | os.PathLike] = (),
                 data_folders: Iterable[str | os.PathLike] = ()) -> None:
        self._by_id: dict[tuple[int, int], Path] = {}
        self._by_path: dict[str, Path] = {}
        self._folders: list[tuple[str, Path]] = []
        for path in files:
            self.add(path)
        for folder in data_folders:
            self.add_data_folder(folder)

    def add(self, path: str | os.PathLike) -> None:
        """A file the command reads (one that does not exist is recorded by its resolved path)."""
        p = Path(path)
        self._by_path[os.path.realpath(p)] = p
        with suppress(OSError, ValueError):
            self._by_id[_key(os.stat(p))] = p

    def add_data_folder(self, folder: str | os.PathLike) -> None:
        """A folder whose files the command reads as data (train's and evaluate's --data)."""
        self._folders.append((os.path.realpath(folder), Path(folder)))

    def input_named(self, path: str | os.PathLike) -> Path | None:
        """The input that `path` is (the same device and inode, or the same resolved path), if any."""
        with suppress(OSError, ValueError):
            found = self._by_id.get(_key(os.stat(path)))
            if found is not None:
                return found
        with suppress(OSError, ValueError):
            return self._by_path.get(os.path.realpath(path))
        return None

    def data_folder_holding(self, folder: str | os.PathLike) -> Path | None:
        """The data folder that `folder` is, or lies in (resolved paths), if any."""
        real = os.path.realpath(folder)
        return next((given for root, given in self._folders
                     if real == root or real.startswith(root.rstrip(os.sep) + os.sep)), None)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether `a` and `b` are one file (Reads' rule: device and inode, or resolved path)."""
    return Reads([b]).input_named(a) is not None


# ----------------------------------------------------------------------------- outputs

@contextmanager
def _as_usage_error(option: str, path: Path) -> Iterator[None]:
    """An OSError while looking at `path` (a name too long, a permission) as a UsageError."""
    try:
        yield
    except OSError as err:
        raise UsageError(f"{option} {path}: {err.strerror or err}") from None


def _probe(option: str, folder: Path) -> None:
    """UsageError unless a new file can be created in `folder` (a read-only file system, /proc,
    a permission that os.access does not see as root)."""
    probe = folder / f".poster-fast-probe-{secrets.token_hex(4)}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as err:
        raise UsageError(f"{option} {folder}: no file can be written there ({err.strerror or err})") from None
    with suppress(OSError):
        probe.unlink()


def make_folder(option: str, folder: Path) -> Path:
    """Create `folder` (and its parents); UsageError naming `option` when a file is in the way,
    it cannot be created or no file can be written in it."""
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
    _probe(option, folder)
    return folder


def check_input(option: str, path: str | os.PathLike, folder: bool = False) -> Path:
    """An existing, readable file (or folder) to read; UsageError naming `option` otherwise (a
    special file is refused: file_problem)."""
    p = Path(path)
    with _as_usage_error(option, p):
        if folder:
            if not p.exists():
                raise UsageError(f"{option} {p}: does not exist")
            if not p.is_dir():
                raise UsageError(f"{option} {p}: is a file; expected a folder")
            if not os.access(p, os.R_OK | os.X_OK):
                raise UsageError(f"{option} {p}: cannot be read (permission denied)")
            return p
        problem = file_problem(p)
        if problem == "is a folder":
            problem = "is a folder; expected a file"
        if problem is not None:
            raise UsageError(f"{option} {p}: {problem}")
    return p


def input_clash(option: str, path: Path, reads: Reads | None) -> None:
    """UsageError if `path` is one of the inputs in `reads`."""
    same = reads.input_named(path) if reads is not None else None
    if same is not None:
        what = "" if os.path.realpath(same) == os.path.realpath(path) else f" (a link to {same})"
        raise UsageError(f"{option} {path}: is one of the input files{what}; an input is never written "
                         "over, not even with --force")


def check_output_file(option: str, path: str | os.PathLike, reads: Reads | None = None, force: bool = False,
                      force_name: str = "--force") -> Path:
    """A file a command will write: not a folder, not a special file, not an input (`reads`),
    not an existing file unless `force` (`force_name`: how the caller says so); its folder is
    created and checked (make_folder). UsageError naming `option` otherwise."""
    out = Path(path)
    with _as_usage_error(option, out):
        if out.is_dir():
            raise UsageError(f"{option} {out}: is a folder; expected a file name")
        input_clash(option, out, reads)
        if out.exists() or out.is_symlink():
            kind = special_kind(out.stat().st_mode) if out.exists() else None
            if kind:
                raise UsageError(f"{option} {out}: is {kind}; expected a regular file to write")
            if not force:
                raise UsageError(f"{option} {out}: exists; it is not overwritten without {force_name} "
                                 "(or give another name)")
    make_folder(option, out.parent)
    return out


def check_output_dir(option: str, path: str | os.PathLike, reads: Reads | None = None) -> Path:
    """A folder a command will write into: not inside a data folder of `reads`; created."""
    folder = Path(path)
    holder = reads.data_folder_holding(folder) if reads is not None else None
    if holder is not None:
        raise UsageError(f"{option} {folder}: is inside the data folder {holder}, whose files this command "
                         "reads: its outputs would be read as data (choose a folder outside it)")
    return make_folder(option, folder)


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, that `folder`'s file system takes."""
    with suppress(OSError, ValueError):
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    return NAME_MAX


def _shortened(stem: str, suffix: str, folder: Path) -> str:
    room = name_max(folder) - len(suffix.encode())
    return stem.encode()[:max(room, 1)].decode(errors="ignore")


def fit_name(stem: str, suffix: str, folder: Path) -> str:
    """stem + suffix, the stem shortened (whole characters) so that the name fits `folder`'s
    limit on a name in bytes."""
    return _shortened(stem, suffix, folder) + suffix


_TEMP_TAIL = ".{}.tmp"  # + 8 hex digits


def temp_path(path: Path, suffix: str = "") -> Path:
    """A fresh temporary name beside `path`: NAME.<8 hex>.tmp<suffix>, NAME shortened so that it
    fits the folder's limit on a name."""
    tail = _TEMP_TAIL.format(secrets.token_hex(4)) + suffix
    return path.with_name(fit_name(path.name, tail, path.parent))


@contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside `path` to write to (temp_path); renamed onto `path` when the block
    ends, removed if it raises. (Writers that pick a format by extension must be told the format,
    or given `suffix`.)"""
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


def write_file(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """The one writer: `write(tmp)` fills a temporary file beside `path`, renamed onto `path` once
    complete (atomic_path). Any OSError becomes an OutputError naming `path`; the previous file
    of that name, if any, is left as it was."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except OSError as err:
        raise OutputError(path, err.strerror or str(err)) from None
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Replace `path` with `text` (write_file)."""
    return write_file(path, lambda tmp: tmp.write_text(text, newline=""))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Replace `path` with `obj` as JSON (json_text: indented, non-finite numbers as null; write_file)."""
    return write_text(path, json_text(obj))


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
    each line is then written with one call and reaches the file at once (no buffering). Failing
    to create it is an OutputError naming `path`, as in write_file; a failed line is the OSError."""

    def __init__(self, path: Path) -> None:
        self.path, self._fd = path, -1
        try:
            with atomic_path(path) as tmp:
                self._fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o666)
        except OSError as err:
            self.close()
            raise OutputError(path, err.strerror or str(err)) from None

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
    (NAME.<hex>.tmp, NAME shortened as temp_path does) and the older fixed name NAME.tmp, for
    each NAME; returns those removed."""
    removed = []
    tail = _TEMP_TAIL.format("0" * 8)
    for name in names:
        stem = glob.escape(str(folder / _shortened(name, tail, folder)))
        for tmp in sorted({*glob.glob(stem + ".*.tmp"), *glob.glob(glob.escape(str(folder / name)) + ".tmp")}):
            with suppress(OSError):
                os.unlink(tmp)
                removed.append(Path(tmp))
    return removed
