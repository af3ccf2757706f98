"""The durable inbox: group commit of received callbacks, acknowledged only after their commit.

Writer threads own the inserts. Whenever one is free it takes every request queued so far
(up to `max_batch`) and commits them in one transaction, so at low load a request waits for
one commit, and at high load many requests share one. Three writers by default: while one waits
for its commit to reach the disk, the others already collect and write the next groups, so the
commit's latency does not cap the rate (with two, the event loop still idled ~10 % of the time
at saturation, waiting for commits; with three it stays busy). On PostgreSQL a group is one
fixed statement (`unnest` of one binary array per column, prepared by the driver after a few
uses) whatever its size, in autocommit (one round trip), on a connection each writer keeps.

A request's future resolves only after the commit that holds its row; if that commit fails, it
resolves with `InboxUnavailable` (the route answers 503, so the provider retries). The write
happens in a writer thread whatever becomes of the request's handler, so a provider hanging up
mid-request cannot undo it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import select
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
import structlog
from sqlalchemy import Engine, insert

from ledger.models import Callback, Stamp

log = structlog.get_logger(__name__)
_TABLE: Any = Callback.__table__
_STOP = object()
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


_Item = tuple[Received, "asyncio.Future[int]", asyncio.AbstractEventLoop]


class Inbox:
    """Group-committing writer; `on_committed(ids)` runs in the writer thread after each commit,
    and `on_timing(seconds, rows)` with how long that group's write and commit took."""

    def __init__(
        self,
        engine: Engine,
        on_committed: Callable[[list[int]], None],
        max_batch: int = 512,
        writers: int = 3,
        on_timing: Callable[[float, int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._on_committed = on_committed
        self._on_timing = on_timing
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        # SQLite has one writer at a time whatever we do: a second thread would only wait.
        count = 1 if engine.dialect.name == "sqlite" else max(1, writers)
        self._threads = [
            threading.Thread(target=self._run, name=f"inbox-writer-{n}", daemon=True)
            for n in range(count)
        ]
        self._writer = _PgWriter if engine.dialect.name == "postgresql" else _CoreWriter
        self._commits = 0
        self._count_lock = threading.Lock()

    @property
    def commits(self) -> int:
        return self._commits

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Commit what is queued, then end the writer threads."""
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=30)

    async def put(self, item: Received) -> int:
        """Store `item`; the callback id once its row is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queue.put((item, future, loop))
        # Once queued, the row is written whatever becomes of this handler: if it is cancelled
        # (the provider hung up), the future is cancelled and the writer skips resolving it.
        return await future

    def _run(self) -> None:
        writer = self._writer(self._engine)
        stopping = False
        try:
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
                self._commit(writer, batch)
        finally:
            writer.close()

    def _commit(self, writer: _Writer, batch: list[_Item]) -> None:
        items = [r for r, _, _ in batch]
        started = time.perf_counter()
        try:
            ids = writer.insert(items)
        except Exception as exc:  # any failure to commit means: not stored, say 503
            log.error("inbox_commit_failed", error=str(exc)[:200], batch=len(batch))
            _settle(batch, None, InboxUnavailable(type(exc).__name__))
            return
        elapsed = time.perf_counter() - started
        with self._count_lock:
            self._commits += 1
        _settle(batch, ids, None)
        if self._on_timing is not None:
            with contextlib.suppress(Exception):  # a metric must never stop the writer
                self._on_timing(elapsed, len(ids))
        try:
            self._on_committed(ids)
        except Exception as exc:  # the sweeper re-enqueues whatever was not handed on
            log.warning("inbox_dispatch_failed", error=str(exc)[:200], ids=len(ids))


class _Writer:
    """How one writer thread stores a group: `insert(items)` commits them and returns their ids
    in the group's order, or raises (nothing of the group is stored)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def insert(self, items: list[Received]) -> list[int]:
        raise NotImplementedError

    def close(self) -> None:
        """Give back what the writer holds (called when its thread ends)."""


class _Refused(Exception):
    """The server answered the group's statement with an error and the connection is still
    usable: the statement was rolled back, nothing of the group is stored."""


class _PgWriter(_Writer):
    """One statement per group, in autocommit, on a psycopg connection the thread keeps between
    groups, with binary parameters (no text escaping of the bodies).

    In autocommit the INSERT is its own transaction and its rows come back only once it has
    committed: one round trip per group. In a transaction it took three (BEGIN, the INSERT,
    COMMIT), and on this kind of machine a round trip to a local PostgreSQL costs the receiver
    more CPU than the statement itself.

    A kept connection can have died since the last group (the server restarted, a proxy timed it
    out). A connection the server closed, or that it sent anything to while idle, is readable
    before we send; it is discarded and the group goes to a fresh connection from the pool (the
    pool pings it). Once the statement is sent, an error the server answered on a connection
    that stays usable means the statement was rolled back: the group is written once more on a
    fresh connection. A connection lost after sending leaves the outcome unknown; it is not
    retried: the requests get 503 and the provider sends them again (a second copy of a callback
    that was in fact stored is a duplicate, which the workers recognise). A connection that
    failed is discarded, never reused."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._raw: Any = None

    def insert(self, items: list[Received]) -> list[int]:
        columns = (
            [i.provider for i in items],
            [i.account for i in items],
            # The column type's own check: aware UTC only, a naive time is refused.
            [Stamp.process_bind_param(i.received_at, self._engine.dialect) for i in items],
            [i.remote_addr for i in items],
            [i.headers for i in items],
            [i.body for i in items],
        )
        kept, self._raw = self._raw, None
        if kept is not None and not _idle_and_open(kept.driver_connection):
            log.warning("inbox_reconnect", reason="connection closed or unexpected data")
            _discard(kept)
            kept = None
        try:
            return self._store(kept or self._checkout(), columns, len(items))
        except _Refused as exc:
            log.warning("inbox_retry", error=str(exc.__cause__)[:200])
        try:
            return self._store(self._checkout(), columns, len(items))
        except _Refused as exc:
            cause = exc.__cause__
            assert cause is not None
            raise cause from None

    def _checkout(self) -> Any:
        raw: Any = self._engine.raw_connection()
        raw.driver_connection.autocommit = True
        return raw

    def _store(self, raw: Any, columns: tuple[list[Any], ...], count: int) -> list[int]:
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(_PG_INSERT, columns)
                ids = sorted(int(row[0]) for row in cursor.fetchall())
            finally:
                cursor.close()
        except BaseException as exc:
            refused = isinstance(exc, psycopg.Error) and exc.sqlstate is not None and (
                _idle_and_open(raw.driver_connection))
            _discard(raw)
            if refused:
                raise _Refused from exc
            raise
        self._raw = raw
        if len(ids) != count:
            raise RuntimeError(f"inbox insert returned {len(ids)} ids for {count} rows")
        return ids

    def close(self) -> None:
        if self._raw is not None:
            raw, self._raw = self._raw, None
            try:
                raw.driver_connection.autocommit = False  # as the pool's other users expect
                raw.close()  # back to the pool
            except Exception:
                _discard(raw)


def _idle_and_open(conn: psycopg.Connection[Any]) -> bool:
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


def _discard(raw: Any) -> None:
    """Close `raw` for good (the pool will open a new connection in its place)."""
    with contextlib.suppress(Exception):
        raw.invalidate()


class _CoreWriter(_Writer):
    """SQLite (and any other dialect): SQLAlchemy Core's multi-row insert, one transaction."""

    def insert(self, items: list[Received]) -> list[int]:
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
