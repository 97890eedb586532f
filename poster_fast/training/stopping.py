"""SIGTERM, which Slurm, Kubernetes and torchrun send before they stop a job: noted when it
arrives, acted on at the next step boundary (every rank together; training/loop.py saves last.pt
there and stops with errors.Stopped, exit status 75)."""
from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class StopRequest:
    """While active (a `with` block in the main thread), SIGTERM sets `requested` instead of
    ending the process; the previous handler is restored on leaving."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._note)
            self._installed = True
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False


def ignore_sigterm(worker_id: int) -> None:
    """A data-loader worker's `worker_init_fn`: schedulers and torchrun signal a job's whole
    process group, and a worker that died of it would stop training before its checkpoint; the
    workers end when the training process shuts them down (or dies)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
