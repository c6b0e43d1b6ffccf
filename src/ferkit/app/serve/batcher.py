"""Micro-batching: concurrent requests share one model through a single worker thread.

Each request hands its face crops to :meth:`MicroBatcher.submit` and waits; the
worker takes every request that is pending (up to ``max_batch`` crops, waiting at
most ``max_wait_ms`` for more once the first has arrived), runs the model once on
all of them, and hands each request its own rows back. Under load the model
sees large batches (cheaper per crop); an idle server answers a lone request at
once, since the wait only matters while the batch is still small.

:class:`BatchedClassifier` puts a model behind a batcher as a
:class:`~ferkit.infer.recognizer.Classifier`, so the server's recognizers use
it like any other classifier.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Self

import numpy as np

from ferkit.engine.preprocess import Preprocess
from ferkit.infer.recognizer import Classifier

log = logging.getLogger(__name__)


@dataclass
class _Request:
    items: Sequence[np.ndarray]
    future: Future


@dataclass
class BatcherStats:
    """Counters since start: model calls, crops classified, requests served."""

    batches: int = 0
    items: int = 0
    requests: int = 0
    largest_batch: int = 0

    @property
    def mean_batch(self) -> float:
        return self.items / self.batches if self.batches else 0.0


class BatcherClosed(RuntimeError):
    """The batcher was closed before (or while) a request was served."""


class MicroBatcher:
    """Run ``fn`` (list of crops -> ``(N, K)`` array) on the crops of all pending requests at once.

    ``fn`` is called only from the worker thread, so a model that is not safe to
    call from several threads at once is still safe behind a batcher.
    """

    def __init__(
        self,
        fn: Callable[[list[np.ndarray]], np.ndarray],
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        name: str = "batcher",
        on_start: Callable[[], None] | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.fn = fn
        self._on_start = on_start  # run first in the worker thread (thread-local settings such as torch threads)
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.name = name
        self.stats = BatcherStats()
        self._pending: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._worker, name=f"ferkit-{name}", daemon=True)
        self._thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def queued(self) -> int:
        """Requests waiting for the model now."""
        with self._cond:
            return len(self._pending)

    def submit_future(self, items: Sequence[np.ndarray]) -> Future:
        """Queue ``items`` and return a Future of their ``(len(items), K)`` result rows."""
        fut: Future = Future()
        with self._cond:
            if self._closed:
                raise BatcherClosed(f"{self.name}: closed")
            self._pending.append(_Request(list(items), fut))
            self._cond.notify()
        return fut

    def submit(self, items: Sequence[np.ndarray], timeout: float | None = None) -> np.ndarray:
        """Queue ``items``, block until the worker has run them, return their ``(len(items), K)`` rows."""
        return self.submit_future(items).result(timeout=timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Serve what is queued, then stop the worker; later submits raise :class:`BatcherClosed`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _take_batch(self) -> list[_Request] | None:
        """Wait for work; return the requests of one batch, or None when closed and drained."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None
            deadline = time.monotonic() + self.max_wait_s
            while not self._closed:
                n = sum(len(r.items) for r in self._pending)
                left = deadline - time.monotonic()
                if n >= self.max_batch or left <= 0:
                    break
                self._cond.wait(left)
            batch, n = [], 0
            # A request is never split, so one larger than max_batch runs alone (fn chunks it itself).
            while self._pending and (not batch or n + len(self._pending[0].items) <= self.max_batch):
                req = self._pending.popleft()
                batch.append(req)
                n += len(req.items)
            return batch

    def _worker(self) -> None:
        if self._on_start is not None:
            self._on_start()
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            batch = [r for r in batch if r.future.set_running_or_notify_cancel()]
            items = [im for r in batch for im in r.items]
            try:
                out = np.asarray(self.fn(items)) if items else None
                if out is not None and len(out) != len(items):
                    raise RuntimeError(f"{self.name}: model returned {len(out)} rows for {len(items)} inputs")
            except BaseException as exc:  # handed to every waiting request; the worker lives on
                log.exception("%s: batch of %d failed", self.name, len(items))
                for r in batch:
                    r.future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.items += len(items)
            self.stats.requests += len(batch)
            self.stats.largest_batch = max(self.stats.largest_batch, len(items))
            start = 0
            for r in batch:
                k = len(r.items)
                r.future.set_result(out[start:start + k] if out is not None else np.zeros((0, 0), np.float32))
                start += k


class BatchedClassifier:
    """A :class:`~ferkit.infer.recognizer.Classifier` whose calls, from any number of threads, meet in one batcher.

    ``probs`` hands its prepared crops to a :class:`MicroBatcher` whose worker
    runs ``base`` once on the crops of every request pending, so requests,
    live connections and video jobs share the model (no copy, no lock) and it
    sees large batches under load. A combined batch holds at most ``max_batch``
    crops, or one request's crops when that request alone has more.
    """

    def __init__(self, base: Classifier, max_batch: int = 64, max_wait_ms: float = 2.0, name: str = "batcher",
                 on_start: Callable[[], None] | None = None):
        self.base = base
        self.batcher = MicroBatcher(self._run, max_batch=max_batch, max_wait_ms=max_wait_ms, name=name, on_start=on_start)

    @property
    def preprocess(self) -> Preprocess:
        return self.base.preprocess

    def probs(self, batch: np.ndarray) -> np.ndarray:
        """uint8 ``(N, S, S[, 3])`` -> float32 ``(N, K)``; blocks until the batcher's worker has run them."""
        if not len(batch):
            return np.zeros((0, len(self.preprocess.label_names)), np.float32)
        return self.batcher.submit(list(batch))  # one row per crop, so other requests' rows can join them

    def _run(self, rows: list[np.ndarray]) -> np.ndarray:
        return self.base.probs(np.stack(rows))  # in the worker thread: (n, S, S[, 3]) uint8 -> (n, K)

    def close(self) -> None:
        """Serve what is queued, then stop the worker."""
        self.batcher.close()
