"""Hands committed callback ids to the workers in batches, on the receiver's event loop.

A publish that fails (Redis down, restarting) is logged and dropped: the rows are committed,
and the sweeper re-enqueues every callback that is not final after its deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from ingest.backlog import Backlog

log = structlog.get_logger(__name__)


class Dispatcher:
    """Merges id lists into batches of at most `max_ids` and publishes each as one task.

    After the first ids arrive it waits up to `linger_s` for more (unless it already holds a
    full batch): a few milliseconds more before a worker sees a callback, in exchange for fewer,
    fuller tasks, which is cheaper for the receiver, the broker and the workers alike.

    It is a task on the event loop, not a thread: `submit` is called on the loop (by the inbox
    after each commit, by the API's replay), and a thread would take the GIL back and forth
    with the loop for every batch.
    """

    def __init__(
        self,
        publish: Callable[[list[int]], Awaitable[None]],
        max_ids: int = 64,
        linger_s: float = 0.005,
    ) -> None:
        self._publish = publish
        self._max_ids = max_ids
        self._linger_s = linger_s
        self._backlog: Backlog[int] = Backlog()
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.tasks = 0

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dispatcher")

    async def stop(self, timeout_s: float = 10) -> None:
        """Publish what is pending, then end."""
        self._backlog.close()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except TimeoutError:
                log.warning("dispatcher_stop_timeout", pending=len(self._backlog.items))
        log.info("dispatcher_stopped", published=self.published, tasks=self.tasks)

    def submit(self, ids: list[int]) -> None:
        """Queue `ids` for publishing (on the loop's thread)."""
        self._backlog.extend(ids)

    async def _run(self) -> None:
        backlog = self._backlog
        while await backlog.ready():
            if len(backlog.items) < self._max_ids and not backlog.closed:
                await asyncio.sleep(self._linger_s)
            await self._flush(backlog.take(len(backlog.items)))

    async def _flush(self, ids: list[int]) -> None:
        for start in range(0, len(ids), self._max_ids):
            chunk = ids[start : start + self._max_ids]
            try:
                await self._publish(chunk)
                self.published += len(chunk)
                self.tasks += 1
            except Exception as exc:  # broker trouble: the sweeper owns recovery
                log.warning(
                    "publish_failed", error=str(exc)[:200], ids=len(chunk), first_id=chunk[0]
                )
