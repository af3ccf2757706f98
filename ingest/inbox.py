"""The durable inbox: group commit of received callbacks, acknowledged only after their commit.

One writer thread owns the inserts. Whenever it is free it takes every request queued so far
(up to `max_batch`) and commits them in one transaction, so at low load a request waits for
one commit, and at high load many requests share one. A request's future resolves only after
the commit that holds its row; if that commit fails, it resolves with `InboxUnavailable`
(the route answers 503, so the provider retries). The write happens in the thread whatever
becomes of the request's handler, so a provider hanging up mid-request cannot undo it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Engine, insert

from ledger.models import Callback

log = structlog.get_logger(__name__)
_TABLE: Any = Callback.__table__
_STOP = object()


class InboxUnavailable(Exception):
    """Raised to a request whose row could not be committed (database down or refusing)."""


@dataclass(frozen=True, slots=True)
class Received:
    """One raw request as it will be stored."""

    provider: str
    account: str
    received_at: datetime
    remote_addr: str | None
    headers: str
    body: bytes


_Item = tuple[Received, "asyncio.Future[int]", asyncio.AbstractEventLoop]


class Inbox:
    """Group-committing writer; `on_committed(ids)` runs in the writer thread after each commit."""

    def __init__(
        self,
        engine: Engine,
        on_committed: Callable[[list[int]], None],
        max_batch: int = 512,
    ) -> None:
        self._engine = engine
        self._on_committed = on_committed
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
        self.commits = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Commit what is queued, then end the writer thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    async def put(self, item: Received) -> int:
        """Store `item`; the callback id once its row is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queue.put((item, future, loop))
        # shield: a cancelled handler must not cancel the commit it is waiting for.
        return await asyncio.shield(future)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Item] = [first]  # type: ignore[list-item]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                batch.append(nxt)  # type: ignore[arg-type]
            self._commit(batch)

    def _commit(self, batch: list[_Item]) -> None:
        rows = [
            {
                "provider": r.provider,
                "account": r.account,
                "received_at": r.received_at,
                "remote_addr": r.remote_addr,
                "headers": r.headers,
                "body": r.body,
                "state": "received",
                "attempts": 0,
            }
            for r, _, _ in batch
        ]
        try:
            with self._engine.begin() as conn:
                stmt = insert(_TABLE).returning(_TABLE.c.id, sort_by_parameter_order=True)
                ids = [int(i) for i in conn.execute(stmt, rows).scalars()]
        except Exception as exc:  # any failure to commit means: not stored, say 503
            log.error("inbox_commit_failed", error=str(exc)[:200], batch=len(batch))
            _settle(batch, None, InboxUnavailable(type(exc).__name__))
            return
        self.commits += 1
        _settle(batch, ids, None)
        try:
            self._on_committed(ids)
        except Exception as exc:  # the sweeper re-enqueues whatever was not handed on
            log.warning("inbox_dispatch_failed", error=str(exc)[:200], ids=len(ids))


def _settle(batch: list[_Item], ids: list[int] | None, error: Exception | None) -> None:
    """Resolve each request's future on its own event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int | None]]] = {}
    for index, (_, future, loop) in enumerate(batch):
        by_loop.setdefault(loop, []).append((future, None if ids is None else ids[index]))
    for loop, pairs in by_loop.items():
        loop.call_soon_threadsafe(_resolve, pairs, error)


def _resolve(pairs: list[tuple[asyncio.Future[int], int | None]], error: Exception | None) -> None:
    for future, callback_id in pairs:
        if future.done():
            continue
        if error is not None or callback_id is None:
            future.set_exception(error or InboxUnavailable("no id"))
        else:
            future.set_result(callback_id)
