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
import select
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
import structlog
from sqlalchemy import Engine, insert

from ingest.backlog import Backlog
from ledger.models import Callback, Stamp

log = structlog.get_logger(__name__)
_TABLE: Any = Callback.__table__
# One statement text for every group size. The ids come from the table's sequence in the order
# the SELECT yields the rows (ORDER BY the array position), so ascending ids match the group.
_PG_INSERT = (
    "INSERT INTO callbacks"
    " (provider, account, received_at, remote_addr, headers, body, state, attempts)"
    " SELECT p, a, r, ra, h, b, 'received', 0 FROM unnest("
    "%b::varchar[], %b::varchar[], %b::timestamptz[], %b::varchar[], %b::text[], %b::bytea[]"
    ") WITH ORDINALITY AS t(p, a, r, ra, h, b, n) ORDER BY n RETURNING id"
)


class InboxUnavailable(Exception):
    """Raised to a request whose row could not be committed (database down or refusing)."""


class Received(NamedTuple):
    """One raw request as it will be stored (a named tuple: built once per request on the event
    loop, where a frozen dataclass cost ~2 us, a tuple ~0.4)."""

    provider: str
    account: str
    received_at: datetime
    remote_addr: str | None
    headers: str
    body: bytes


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
        max_pending_bytes: int = 64 * 1024 * 1024,
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
        self._store: Callable[[], _Store] = (
            (lambda: _PgStore(engine, write_timeout_s))
            if postgres
            else (lambda: _ThreadStore(engine))
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

    async def _run(self, store: _Store) -> None:
        try:
            while await self._backlog.ready():
                await self._commit(store, self._backlog.take(self._max_batch))
        finally:
            await store.close()

    async def _commit(self, store: _Store, batch: list[_Item]) -> None:
        items = [r for r, _ in batch]
        try:
            await self._write(store, batch, items)
        finally:
            self._pending_bytes -= sum(map(_size, items))

    async def _write(self, store: _Store, batch: list[_Item], items: list[Received]) -> None:
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


class _Store:
    """How one writer stores a group: `insert(items)` commits them and returns their ids in the
    group's order, or raises (nothing of the group is stored, or the outcome is unknown)."""

    async def insert(self, items: list[Received]) -> list[int]:
        raise NotImplementedError

    async def close(self) -> None:
        """Give back what the writer holds (called when it ends)."""


class _Refused(Exception):
    """The server answered the group's statement with an error and the connection is still
    usable: the statement was rolled back, nothing of the group is stored."""


class _PgStore(_Store):
    """One statement per group, in autocommit, on an asynchronous psycopg connection the writer
    keeps between groups, with binary parameters (no text escaping of the bodies).

    In autocommit the INSERT is its own transaction and its rows come back only once it has
    committed: one round trip per group. In a transaction it took three (BEGIN, the INSERT,
    COMMIT), and on this kind of machine a round trip to a local PostgreSQL costs the receiver
    more CPU than the statement itself.

    A kept connection can have died since the last group (the server restarted, a proxy timed it
    out). A connection the server closed, or that it sent anything to while idle, is readable
    before we send; it is discarded and the group goes to a new connection. Once the statement
    is sent, an error the server answered on a connection that stays usable means the statement
    was rolled back: the group is written once more on a new connection. A connection lost
    after sending leaves the outcome unknown; it is not retried: the requests get 503 and the
    provider sends them again (a second copy of a callback that was in fact stored is a
    duplicate, which the workers recognise). A connection that failed is closed, never reused.

    A group that has no answer within `timeout_s` (a lock held on the table, a server or network
    that hangs without closing the connection) is abandoned the same way: the driver asks the
    server to cancel the statement, the connection is discarded and the requests get 503, where
    they would otherwise wait, and every request queued behind them with them, until the
    provider gave up."""

    def __init__(self, engine: Engine, timeout_s: float) -> None:
        self._dialect = engine.dialect
        self._timeout_s = timeout_s
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def insert(self, items: list[Received]) -> list[int]:
        columns = (
            [i.provider for i in items],
            [i.account for i in items],
            # The column type's own check: aware UTC only, a naive time is refused.
            [Stamp.process_bind_param(i.received_at, self._dialect) for i in items],
            [i.remote_addr for i in items],
            [i.headers for i in items],
            [i.body for i in items],
        )
        kept, self._conn = self._conn, None
        if kept is not None and not _idle_and_open(kept):
            log.warning("inbox_reconnect", reason="connection closed or unexpected data")
            await _discard(kept)
            kept = None
        try:
            return await self._store(kept or await self._connect(), columns, len(items))
        except _Refused as exc:
            log.warning("inbox_retry", error=str(exc.__cause__)[:200])
        try:
            return await self._store(await self._connect(), columns, len(items))
        except _Refused as exc:
            cause = exc.__cause__
            assert cause is not None
            raise cause from None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, connect_timeout=10
        )

    async def _store(
        self, conn: psycopg.AsyncConnection[Any], columns: tuple[list[Any], ...], count: int
    ) -> list[int]:
        try:
            async with asyncio.timeout(self._timeout_s), conn.cursor() as cursor:
                await cursor.execute(_PG_INSERT, columns)
                ids = sorted(int(row[0]) for row in await cursor.fetchall())
        except BaseException as exc:
            refused = (
                isinstance(exc, psycopg.Error)
                and exc.sqlstate is not None
                and _idle_and_open(conn)
            )
            await _discard(conn)
            if refused:
                raise _Refused from exc
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"no answer within {self._timeout_s:g} s") from exc
            raise
        self._conn = conn
        if len(ids) != count:
            raise RuntimeError(f"inbox insert returned {len(ids)} ids for {count} rows")
        return ids

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await _discard(conn)


def _idle_and_open(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether `conn` is open, idle, and has nothing from the server waiting: a server that
    ended the session (restart, terminate, proxy timeout) leaves the socket readable."""
    pgconn = conn.pgconn
    if conn.closed or pgconn.status != psycopg.pq.ConnStatus.OK:
        return False
    if pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    try:
        readable, _, _ = select.select([pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.OperationalError):
        return False
    return not readable


async def _discard(conn: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(Exception):
        await conn.close()


class _ThreadStore(_Store):
    """SQLite (and any other dialect): SQLAlchemy Core's multi-row insert in one transaction,
    run in a worker thread (there is no asynchronous driver to wait on)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def insert(self, items: list[Received]) -> list[int]:
        return await asyncio.to_thread(self._insert, items)

    def _insert(self, items: list[Received]) -> list[int]:
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
            for r in items
        ]
        stmt = insert(_TABLE).returning(_TABLE.c.id, sort_by_parameter_order=True)
        with self._engine.begin() as conn:
            return [int(i) for i in conn.execute(stmt, rows).scalars()]
