"""Hands committed callback ids to the workers in batches, off the request path.

A publish that fails (Redis down, restarting) is logged and dropped: the rows are committed,
and the sweeper re-enqueues every callback that is not final after its deadline.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)
_STOP: list[int] = []


class Dispatcher:
    """Merges id lists into batches of at most `max_ids` and publishes each as one task.

    After the first ids arrive it waits up to `linger_s` for more (unless it already holds a
    full batch): a few milliseconds more before a worker sees a callback, in exchange for fewer,
    fuller tasks, which is cheaper for the receiver, the broker and the workers alike.
    """

    def __init__(
        self, publish: Callable[[list[int]], None], max_ids: int = 64, linger_s: float = 0.005
    ) -> None:
        self._publish = publish
        self._max_ids = max_ids
        self._linger_s = linger_s
        self._queue: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        self.published = 0
        self.tasks = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=10)
        log.info("dispatcher_stopped", published=self.published, tasks=self.tasks)

    def submit(self, ids: list[int]) -> None:
        self._queue.put(ids)

    def _run(self) -> None:
        pending: list[int] = []
        while True:
            ids = self._queue.get()
            if ids is _STOP:
                break
            pending.extend(ids)
            deadline = time.monotonic() + self._linger_s
            while len(pending) < self._max_ids:
                wait = deadline - time.monotonic()
                try:
                    more = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._flush(pending)
                    return
                pending.extend(more)
            self._flush(pending)
            pending = []

    def _flush(self, ids: list[int]) -> None:
        for start in range(0, len(ids), self._max_ids):
            chunk = ids[start : start + self._max_ids]
            try:
                self._publish(chunk)
                self.published += len(chunk)
                self.tasks += 1
            except Exception as exc:  # broker trouble: the sweeper owns recovery
                log.warning(
                    "publish_failed", error=str(exc)[:200], ids=len(chunk), first_id=chunk[0]
                )
