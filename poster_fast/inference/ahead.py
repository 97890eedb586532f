"""An iterator computed ahead in a background thread, so that reading, detecting and cropping the
next photos and frames overlaps the model's work on the current batch (OpenCV and torch release
the GIL while they compute), or in the consumer's own thread where the two would only compete for
the same cores (`ahead`; `Recognizer.overlap` decides)."""
from __future__ import annotations

import queue
import threading
from typing import Generic, Iterator, TypeVar, Union

T = TypeVar("T")
_END = object()


class Ahead(Generic[T]):
    """Iterates over `items` in a daemon thread, at most `depth` items ahead of the consumer.

    An exception raised by `items` is raised again in the consumer, at the item where it happened.
    `close()` (also on leaving a `with` block, or when the consumer is interrupted) stops the
    thread at its next item and closes `items` there (so that, say, a capture it opened is
    released); `waiting` says whether an item is ready now.
    """

    def __init__(self, items: Iterator[T], depth: int) -> None:
        self._items = items
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poster-fast-ahead", daemon=True)
        self._thread.start()

    def _put(self, entry: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._items:
                if not self._put((item, None)):
                    break
            else:
                self._put((_END, None))
        except BaseException as err:  # handed to the consumer
            self._put((_END, err))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    @property
    def waiting(self) -> bool:
        return not self._queue.empty()

    def __iter__(self) -> Iterator[T]:
        try:
            while True:
                try:
                    item, err = self._queue.get(timeout=0.05)
                except queue.Empty:
                    continue
                if err is not None:
                    raise err
                if item is _END:
                    return
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def __enter__(self) -> "Ahead[T]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Inline(Generic[T]):
    """`Ahead`'s interface without a thread: `items` is computed as it is consumed; `waiting` is
    always False (no item is ever ready before it is asked for); `close()` closes `items`."""

    waiting = False

    def __init__(self, items: Iterator[T]) -> None:
        self._items = items

    def __iter__(self) -> Iterator[T]:
        try:
            yield from self._items
        finally:
            self.close()

    def close(self) -> None:
        close = getattr(self._items, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "Inline[T]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ahead(items: Iterator[T], depth: int, threaded: bool) -> Union[Ahead[T], Inline[T]]:
    """`items` computed `depth` ahead in a background thread if `threaded`, else as consumed."""
    return Ahead(items, depth) if threaded else Inline(items)
