"""The durable inbox: group commit of received callbacks, acknowledged only after their commit.

Writer tasks on the receiver's event loop own the inserts. Whenever one is free it takes every
request queued so far (up to `max_batch`) and commits them together, so at low load a request
waits for one commit, and at high load many requests share one. On PostgreSQL there are three
writers, each with its own asynchronous connection: while one waits for its commit to reach
the disk, the others already write the next groups, so the commit's latency does not cap the
rate. A group is one fixed statement (`unnest` of one binary array per column, prepared by the
driver after a few uses) whatever its size, in autocommit: one round trip.

Why tasks and not threads: the ack path is the event loop's core. Writer threads took the GIL
from the loop and gave it back several times per group (the wake-up, each wait on the
database, handing the result back), one context switch per acknowledged request on average;
on the loop, a wait on the database is just another socket in its selector. SQLite has no
asynchronous driver: there, one writer task runs each group's insert in a worker thread.

A request's future resolves only after the commit that holds its row; if that commit fails, it
resolves with `InboxUnavailable` (the route answers 503, so the provider retries). Once queued,
a request is written whatever becomes of its handler, so a provider hanging up mid-request
cannot undo it; `stop` writes everything still queued before it returns.

The requests waiting for a commit are bounded by their size (`max_pending_bytes`): while the
database is slow or away, requests pile up for as long as the write timeout and the reconnect
take, and past the bound a new request is refused at once (503) instead of growing the
receiver's memory with bodies it cannot store yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog
from sqlalchemy import Engine

from ingest.backlog import Backlog
from ingest.stores import PgStore, Received, Store, ThreadStore
from payhook.settings import INBOX_PENDING_BYTES

log = structlog.get_logger(__name__)


class InboxUnavailable(Exception):
    """Raised to a request whose row could not be committed (database down or refusing)."""


_Item = tuple[Received, "asyncio.Future[int]"]


def _size(item: Received) -> int:
    """What a waiting request holds that can be large: its body and headers."""
    return len(item.body) + len(item.headers)


class Inbox:
    """Group-committing writer tasks; `on_committed(ids)` runs on the loop after each commit,
    and `on_timing(seconds, rows)` with how long that group's write and commit took.

    `start`, `put` and `stop` are called on one running event loop."""

    def __init__(
        self,
        engine: Engine,
        on_committed: Callable[[list[int]], None],
        max_batch: int = 512,
        writers: int = 3,
        on_timing: Callable[[float, int], None] | None = None,
        write_timeout_s: float = 10.0,
        max_pending_bytes: int = INBOX_PENDING_BYTES,
    ) -> None:
        self._engine = engine
        self._on_committed = on_committed
        self._on_timing = on_timing
        self._max_batch = max_batch
        self._max_pending_bytes = max_pending_bytes
        self._pending_bytes = 0  # bodies and headers put and not yet settled
        postgres = engine.dialect.name == "postgresql"
        # SQLite has one writer at a time whatever we do: a second one would only wait.
        self._writers = max(1, writers) if postgres else 1
        self._store: Callable[[], Store] = (
            (lambda: PgStore(engine, write_timeout_s))
            if postgres
            else (lambda: ThreadStore(engine))
        )
        self._backlog: Backlog[_Item] = Backlog()
        self._tasks: list[asyncio.Task[None]] = []
        self.commits = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(self._store()), name=f"inbox-writer-{n}")
            for n in range(self._writers)
        ]

    async def stop(self, timeout_s: float = 30) -> None:
        """Commit what is queued, then end the writers."""
        self._backlog.close()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=timeout_s)
            for task in late:
                task.cancel()
            if late:
                log.error("inbox_stop_timeout", pending=len(self._backlog.items))

    async def put(self, item: Received) -> int:
        """Store `item`; the callback id once its row is committed."""
        if not self._tasks or self._backlog.closed:
            raise InboxUnavailable("inbox not running")
        size = _size(item)
        if self._pending_bytes + size > self._max_pending_bytes:
            raise InboxUnavailable("inbox backlog full")
        self._pending_bytes += size
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._backlog.extend([(item, future)])
        # Once queued, the row is written whatever becomes of this handler: if it is cancelled
        # (the provider hung up), the future is cancelled and the writer skips resolving it.
        return await future

    async def _run(self, store: Store) -> None:
        try:
            while await self._backlog.ready():
                await self._commit(store, self._backlog.take(self._max_batch))
        finally:
            await store.close()

    async def _commit(self, store: Store, batch: list[_Item]) -> None:
        items = [r for r, _ in batch]
        try:
            await self._write(store, batch, items)
        finally:
            self._pending_bytes -= sum(map(_size, items))

    async def _write(self, store: Store, batch: list[_Item], items: list[Received]) -> None:
        started = time.perf_counter()
        try:
            ids = await store.insert(items)
        except Exception as exc:  # any failure to commit means: not stored, say 503
            log.error("inbox_commit_failed", error=f"{type(exc).__name__}: {exc}"[:200],
                      batch=len(batch))
            error = InboxUnavailable(type(exc).__name__)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        elapsed = time.perf_counter() - started
        self.commits += 1
        for (_, future), callback_id in zip(batch, ids, strict=True):
            if not future.done():
                future.set_result(callback_id)
        if self._on_timing is not None:
            with contextlib.suppress(Exception):  # a metric must never stop the writer
                self._on_timing(elapsed, len(ids))
        try:
            self._on_committed(ids)
        except Exception as exc:  # the sweeper re-enqueues whatever was not handed on
            log.warning("inbox_dispatch_failed", error=str(exc)[:200], ids=len(ids))
