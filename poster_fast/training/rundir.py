"""The run folder (`--out`) of a training run: which runs may write it, and one at a time.

`claim_run_folder(opts)` is what `train()` calls before anything else (`check_run_folder` is
what the command line checks before any work):

- The folder is created; it may not be, or lie inside, the training data (`--data`): the run's
  plots would land in a class folder and the next run would train on them.
- A folder that already holds a run (any of RUN_FILES) is refused unless this run continues it
  (`--resume` of its own last.pt: `--resume`, `--resume auto`, or that file named) or `--force`
  replaces it. A run started from another file (`--resume OTHER/last.pt`) is a new run here.
- No file of the run may be one of the run's inputs (`--ir50`, `--landmark`, another run's
  last.pt), not even with `--force`.
- The main process holds an exclusive lock on OUT/.poster-fast.lock (fcntl.flock) for the whole
  run, so a second run into the same folder is refused while the first lives. The kernel
  releases the lock when the process ends however it ends (a crash, SIGKILL), so a killed run
  leaves no stale lock and a restarted one (`--resume`, torchrun's restarts) takes it again.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import UsageError
from ..files import Reads, check_output_dir, input_clash, same_file
from .options import TrainOptions, test_split

# What a run writes in its folder (besides confusion_<split>.png): a folder holding one of the
# first four holds a run.
RUN_FILES = ("best.pt", "last.pt", "metrics.csv", "summary.json", "curves.png")
RUN_MARKERS = RUN_FILES[:4]
LOCK_FILE = ".poster-fast.lock"
_HELD: set[int] = set()  # the descriptors of the locks this process holds


def _close_in_child() -> None:
    """A forked child (a DataLoader worker) does not keep its parent's locks alive."""
    for fd in _HELD:
        os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


def run_outputs(opts: TrainOptions) -> tuple[str, ...]:
    """The names of the files the run writes in its folder."""
    return (*RUN_FILES, *(f"confusion_{s}.png" for s in dict.fromkeys((opts.val_split, test_split(opts)))))


def run_reads(opts: TrainOptions) -> Reads:
    """What the run reads: the data folder, the backbone files and the file it resumes from."""
    reads = Reads([p for p in (opts.ir50, opts.landmark) if p], data_folders=[opts.data])
    if opts.resume_path is not None and opts.resume_path.exists():
        reads.add(opts.resume_path)
    return reads


def continues(opts: TrainOptions) -> bool:
    """Whether the run continues the one in its folder: it resumes from that folder's last.pt."""
    own = opts.out_dir / "last.pt"
    return opts.resume_path is not None and own.exists() and same_file(opts.resume_path, own)


def check_run_folder(opts: TrainOptions) -> Path:
    """The run folder, created, once the rules of the module docstring allow this run to write
    it (UsageError naming the option otherwise; the lock is claim_run_folder's)."""
    reads = run_reads(opts)
    out = check_output_dir("--out", opts.out_dir, reads)
    own_last = out / "last.pt" if continues(opts) else None
    for name in run_outputs(opts):
        path = out / name
        if path.is_dir():
            raise UsageError(f"--out {out}: {name} there is a folder; training writes a file of that name")
        if own_last is None or path != own_last:
            input_clash("--out", path, reads)
    found = [name for name in RUN_MARKERS if os.path.lexists(out / name)]
    if found and own_last is None and not opts.force:
        raise UsageError(f"--out {out} already holds a training run ({', '.join(found)}): continue it with "
                         "--resume, start a new run with another --out, or replace it with --force")
    return out


class RunLock:
    """The exclusive lock of a run folder (see the module docstring); `release` or the end of
    the process frees it."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_FILE
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 32).decode(errors="replace").strip()
            os.close(self.fd)
            raise UsageError(f"--out {out}: another training run is writing there"
                             f"{f' (process {holder})' if holder.isdigit() else ''}; wait for it to end, or "
                             "choose another --out") from None
        _HELD.add(self.fd)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self.fd >= 0:
            _HELD.discard(self.fd)
            os.close(self.fd)  # closing the last descriptor frees the lock
            self.fd = -1


def claim_run_folder(opts: TrainOptions, main: bool = True) -> RunLock | None:
    """check_run_folder, with the lock taken first on the main process (`main`; the other ranks
    of a torchrun job write nothing there), so that two runs cannot both pass the check. The
    caller holds the lock until the run ends (RunLock.release)."""
    if not main:
        check_run_folder(opts)
        return None
    out = check_output_dir("--out", opts.out_dir, run_reads(opts))
    lock = RunLock(out)
    try:
        check_run_folder(opts)
    except BaseException:
        lock.release()
        raise
    return lock
