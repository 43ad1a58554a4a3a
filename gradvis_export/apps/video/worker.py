"""Background threads of the video job: decoding runs ahead (`Prefetch`), rendering and
encoding run behind (`OrderedWorker`), and clips are explained by one or more threads at once
(`InOrderPool`).

Queues are bounded (memory stays flat: at most `depth` frames wait); an error in a thread is
raised in the main thread; leaving the `with` block on an error drops the waiting work and
stops the thread before the caller's files are cleaned up.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: niceness of the background threads when the explainer runs one call on several threads: it
#: keeps the cores, decoding and rendering fill the time it leaves idle (a thread's niceness is
#: its own on Linux).  With several single-threaded calls side by side (no barrier between
#: cores) the pipeline passes nice=0: at a lower priority the decode and render threads starved
#: until the explainer ran dry, and the job alternated between the two instead of overlapping.
BACKGROUND_NICE = int(os.environ.get("GRADVIS_BACKGROUND_NICE", "10"))


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _lower_priority(nice: int) -> None:
    """Raise this thread's niceness by `nice` (Linux: per thread; elsewhere a no-op)."""
    if nice and hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):  # not permitted, or not per-thread on this system
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)


class OrderedWorker:
    """`submit(fn, *args)` runs `fn(*args)` on the worker thread, in submission order."""

    def __init__(
        self, depth: int = 16, name: str = "gradvis-render", nice: int = BACKGROUND_NICE
    ) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._cancelled = False
        self.waited = 0.0  # seconds the caller blocked (a full queue, the final drain)
        self.busy = 0.0  # seconds the worker spent running calls
        self.cpu = 0.0  # CPU seconds of those calls (on a busy machine busy > cpu)
        self._nice = nice
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        _lower_priority(self._nice)
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None or self._cancelled:
                continue
            fn, args = item
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                fn(*args)
            except BaseException as error:  # re-raised in the caller's thread
                self._error = error
            self.busy += time.perf_counter() - start
            self.cpu += time.thread_time() - cpu

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self._cancelled = True
            raise error

    def submit(self, fn: Callable[..., object], *args: object) -> None:
        self._raise()
        start = time.perf_counter()
        self._queue.put((fn, args))
        self.waited += time.perf_counter() - start

    def join(self) -> None:
        """Wait until every submitted call ran; raise the first error one of them raised."""
        if self._thread.is_alive():
            start = time.perf_counter()
            self._queue.put(None)
            self._thread.join()
            self.waited += time.perf_counter() - start
        self._raise()

    def cancel(self) -> None:
        """Drop the calls not yet started and stop the thread (after the running one)."""
        self._cancelled = True
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def __enter__(self) -> OrderedWorker:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.join()
        else:
            self.cancel()


class Prefetch(Generic[T]):
    """Iterate `items` on a background thread, `depth` items ahead (decoding and resizing the
    next frames while the current clip is explained).  Errors surface at the same position of
    the iteration as without prefetching; `close()` stops the thread early."""

    _END = object()

    def __init__(
        self,
        items: Iterable[T],
        depth: int = 8,
        name: str = "gradvis-decode",
        nice: int = BACKGROUND_NICE,
    ) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.waited = 0.0  # seconds the consumer blocked on an empty queue
        self.cpu = 0.0  # CPU seconds the producer thread used (final once it ended)
        self._nice = nice
        self._thread = threading.Thread(target=self._loop, args=(items,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _loop(self, items: Iterable[T]) -> None:
        _lower_priority(self._nice)
        try:
            for item in items:
                if not self._put((True, item)):
                    return
        except BaseException as error:  # re-raised in the consumer's thread, in order
            self._put((False, error))
            return
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
            self.cpu = time.thread_time()
        self._put((True, self._END))

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        start = time.perf_counter()
        ok, item = self._queue.get()
        self.waited += time.perf_counter() - start
        if not ok:
            self.close()
            raise item
        if item is self._END:
            self.close()
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class InOrderPool(Generic[T, R]):
    """`submit(item)` starts `fn(item)` on one of `workers` threads and returns the calls that
    finished, oldest first, as (item, result) pairs; `drain()` returns the rest.

    At most `workers` + 1 calls are in flight (one queued, so a worker that finishes starts the
    next call at once): a submit to a full pool first waits for the oldest.  With one worker,
    `fn` runs in the caller's thread (no pool).  Why several: an explainer run
    as N single-threaded calls side by side needs no barrier between cores, so a decode or
    render thread taking one core for a while delays one clip, not every core's share of each.
    """

    def __init__(self, fn: Callable[[T], R], workers: int = 1, name: str = "gradvis-explain"):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._fn = fn
        self.workers = workers
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix=name)
            if workers > 1
            else None
        )
        self._pending: collections.deque = collections.deque()
        self.waited = 0.0  # seconds the caller spent in submit / drain (blocked on fn)

    @property
    def pending(self) -> list[T]:
        """The items submitted whose results were not returned yet, oldest first."""
        return [item for item, _ in self._pending]

    def _oldest(self) -> tuple[T, R]:
        item, future = self._pending.popleft()
        return item, future.result()

    def submit(self, item: T) -> list[tuple[T, R]]:
        start = time.perf_counter()
        try:
            if self._pool is None:
                return [(item, self._fn(item))]
            done = []
            if len(self._pending) > self.workers:
                done.append(self._oldest())
            self._pending.append((item, self._pool.submit(self._fn, item)))
            while self._pending and self._pending[0][1].done():
                done.append(self._oldest())
            return done
        finally:
            self.waited += time.perf_counter() - start

    def drain(self) -> list[tuple[T, R]]:
        start = time.perf_counter()
        try:
            return [self._oldest() for _ in range(len(self._pending))]
        finally:
            self.waited += time.perf_counter() - start

    def __enter__(self) -> InOrderPool[T, R]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:  # on an error: drop the calls not started, wait for the rest
            self._pool.shutdown(wait=True, cancel_futures=True)
