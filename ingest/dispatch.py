"""Hands committed callback ids to the workers in batches, on the receiver's event loop.

A publish that fails is retried after a short back-off, the ids behind it held meanwhile: a
Redis restart or a failover refuses a push or two and then takes them, and a batch of thousands
of acknowledged callbacks should not wait minutes for the sweeper because of it. Once failures
persist (a few attempts, or a few seconds: Redis down, or hanging until the publish timeout),
the batch is given up, and so are ids submitted while `max_backlog` are already waiting. Nothing
is lost: the rows are committed with `enqueued_at` NULL, which only the sweeper and a replay
set, and the sweeper re-enqueues every callback that is not final after its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from ingest.backlog import Backlog

log = structlog.get_logger(__name__)


class Dispatcher:
    """Merges id lists into batches of at most `max_ids` and publishes each as one task.

    After the first ids arrive it waits up to `linger_s` for more (unless it already holds a
    full batch): a few milliseconds more before a worker sees a callback, in exchange for fewer,
    fuller tasks, which is cheaper for the receiver, the broker and the workers alike.

    It holds at most `max_backlog` ids not yet published (waiting, or taken and being sent):
    while Redis hangs, each push waits out the publish timeout, and ids would otherwise pile up
    at the receive rate for as long as it lasts. `on_dropped(reason, count)` is told of every
    id dropped (`backlog_full`, `publish_failed`).

    A failed push is tried again after `retry_after_s`, doubled on each failure up to
    `max_retry_wait_s`; the failed chunk too, since a push that raised most likely enqueued
    nothing, and if it did, a second task for the same ids is harmless (tasks are idempotent,
    and a callback another task has claimed is left to it). Failures form one streak until a
    push succeeds; once the streak reaches `max_attempts` failures or `retry_budget_s`
    seconds, the batch in hand is dropped (`publish_failed`) and each later batch gets one try
    until a push succeeds again: so, once the first batch has spent the budget, a hanging
    Redis costs one publish timeout per batch, as without retries, and what waits stays within
    `max_backlog` throughout. Once stopping, a failed push is not retried: `stop` has a
    deadline, and the sweeper is the retry.

    It is a task on the event loop, not a thread: `submit` is called on the loop (by the inbox
    after each commit, by the API's replay), and a thread would take the GIL back and forth
    with the loop for every batch.
    """

    def __init__(
        self,
        publish: Callable[[list[int]], Awaitable[None]],
        max_ids: int = 64,
        linger_s: float = 0.005,
        max_backlog: int = 100_000,
        on_dropped: Callable[[str, int], None] | None = None,
        retry_after_s: float = 0.05,
        max_retry_wait_s: float = 1.0,
        max_attempts: int = 8,
        retry_budget_s: float = 5.0,
    ) -> None:
        self._publish = publish
        self._max_ids = max_ids
        self._linger_s = linger_s
        self._max_backlog = max_backlog
        self._on_dropped = on_dropped
        self._retry_after_s = retry_after_s
        self._max_retry_wait_s = max_retry_wait_s
        self._max_attempts = max_attempts
        self._retry_budget_s = retry_budget_s
        self._failures = 0  # pushes failed since the last one that succeeded
        self._failing_since = 0.0  # monotonic time the first of them started
        self._backlog: Backlog[int] = Backlog()
        self._sending = 0  # ids taken from the backlog and neither published nor dropped yet
        self._full_unlogged = 0  # dropped as backlog_full since the last log line saying so
        self.published = 0
        self.tasks = 0
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Ids held, not yet published: at most `max_backlog`."""
        return len(self._backlog.items) + self._sending

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dispatcher")

    async def stop(self, timeout_s: float = 10) -> None:
        """Publish what is pending, then end."""
        self._backlog.close()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except TimeoutError:
                log.warning("dispatcher_stop_timeout", pending=self.pending)
        self._log_full()
        log.info("dispatcher_stopped", published=self.published, tasks=self.tasks,
                 dropped=self.dropped)

    def submit(self, ids: list[int]) -> None:
        """Queue `ids` for publishing (on the loop's thread); those past `max_backlog` are
        dropped, left to the sweeper."""
        room = self._max_backlog - self.pending  # never below 0: nothing is added past it
        if len(ids) > room:
            self._drop("backlog_full", len(ids) - room)
            self._full_unlogged += len(ids) - room
            ids = ids[:room]
        if ids:
            self._backlog.extend(ids)

    async def _run(self) -> None:
        backlog = self._backlog
        while await backlog.ready():
            if len(backlog.items) < self._max_ids and not backlog.closed:
                await asyncio.sleep(self._linger_s)
            ids = backlog.take(len(backlog.items))
            self._sending = len(ids)
            await self._flush(ids)
            self._sending = 0  # published or dropped (if cancelled, `stop` counts them pending)

    async def _flush(self, ids: list[int]) -> None:
        start = 0
        while start < len(ids):
            chunk = ids[start : start + self._max_ids]
            began = time.monotonic()
            try:
                await self._publish(chunk)
            except Exception as exc:
                left = len(ids) - start
                delay = self._failed(began)
                error = str(exc)[:200]
                if delay is None:
                    self._drop("publish_failed", left)
                    log.warning("publish_failed", error=error, ids=left, first_id=chunk[0],
                                failures=self._failures)
                    return
                log.warning("publish_retry", error=error, ids=left, first_id=chunk[0],
                            attempt=self._failures, retry_in_s=delay)
                await self._backlog.pause(delay)
                continue
            finally:
                self._log_full()
            self._failures = 0
            self.published += len(chunk)
            self.tasks += 1
            self._sending -= len(chunk)
            start += len(chunk)

    def _failed(self, began: float) -> float | None:
        """Count a failed push (started at `began`); the back-off before the next try, or None
        to give the batch up."""
        if self._failures == 0:
            self._failing_since = began
        self._failures += 1
        if (self._backlog.closed or self._failures >= self._max_attempts
                or time.monotonic() - self._failing_since >= self._retry_budget_s):
            return None
        doubled = self._retry_after_s * 2.0 ** min(self._failures - 1, 30)
        return min(doubled, self._max_retry_wait_s)

    def _drop(self, reason: str, count: int) -> None:
        self.dropped += count
        if self._on_dropped is not None:
            with contextlib.suppress(Exception):  # a metric must never stop the hand-off
                self._on_dropped(reason, count)

    def _log_full(self) -> None:
        """One line per push at most, not one per commit, for the ids the full backlog
        refused meanwhile."""
        if self._full_unlogged:
            log.warning("dispatch_backlog_full", dropped=self._full_unlogged,
                        max_backlog=self._max_backlog)
            self._full_unlogged = 0
