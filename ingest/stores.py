"""How the inbox's writers store a group of received requests: `PgStore`, one `unnest` INSERT
in autocommit on an asynchronous psycopg connection kept between groups, and `ThreadStore`,
SQLAlchemy Core in a worker thread for SQLite. Each returns the group's ids in its order, or
raises with nothing of the group stored (or the outcome unknown)."""

from __future__ import annotations

import asyncio
import contextlib
import select
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
import structlog
from sqlalchemy import Engine, insert

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


class Received(NamedTuple):
    """One raw request as it will be stored (a named tuple: built once per request on the event
    loop, where a frozen dataclass cost ~2 us, a tuple ~0.4)."""

    provider: str
    account: str
    received_at: datetime
    remote_addr: str | None
    headers: str
    body: bytes


class Store:
    """How one writer stores a group: `insert(items)` commits them and returns their ids in the
    group's order, or raises (nothing of the group is stored, or the outcome is unknown)."""

    async def insert(self, items: list[Received]) -> list[int]:
        raise NotImplementedError

    async def close(self) -> None:
        """Give back what the writer holds (called when it ends)."""


class _Refused(Exception):
    """The server answered the group's statement with an error and the connection is still
    usable: the statement was rolled back, nothing of the group is stored."""


class PgStore(Store):
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
    # poll, not select: select takes no descriptor from FD_SETSIZE (1024) up and raised
    # ValueError there, so a receiver holding over ~1000 sockets dropped its connection
    # before every group. Any event (data, POLLHUP, POLLERR, POLLNVAL) means: not idle.
    try:
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError, psycopg.OperationalError):
        return False


async def _discard(conn: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(Exception):
        await conn.close()


class ThreadStore(Store):
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
