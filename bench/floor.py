"""The ack path's second reference: the smallest durable receiver, the issue's own prototype.

Group commit flushed whenever the one writer is free, commit before ack, and nothing else: it
stores the body only (no headers, account, time or address), hands nothing to the workers, keeps
no metrics. It writes to a table of its own in the bench's database, with the same driver and
statement shape as payhook's inbox (PostgreSQL: one `unnest` insert per group on an asynchronous
psycopg connection in autocommit; SQLite: one transaction per group in a worker thread).

Beside the echo server it says how much of the gap between payhook and bare aiohttp the durable
write alone costs on the host of the run, and what is left to payhook's own work. Not a
production design: a failed write is a 500, there is no retry, timeout or bound.
`python -m bench.floor PORT`.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
from aiohttp import web
from sqlalchemy.engine import make_url

_Waiting = list[tuple[bytes, "asyncio.Future[int]"]]
_Store = Callable[[list[bytes]], Awaitable[list[int]]]


class _Writer:
    def __init__(self, store: _Store) -> None:
        self.waiting: _Waiting = []
        self.wake = asyncio.Event()
        self._store = store

    async def run(self) -> None:
        while True:
            while not self.waiting:
                self.wake.clear()
                await self.wake.wait()
            group, self.waiting = self.waiting, []
            try:
                ids = await self._store([body for body, _ in group])
            except Exception as exc:  # not stored: the group's requests get a 500
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), callback_id in zip(group, ids, strict=True):
                if not future.done():
                    future.set_result(callback_id)


async def _postgres(url: str) -> _Store:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await conn.execute("DROP TABLE IF EXISTS bench_floor")
    await conn.execute("CREATE TABLE bench_floor (id bigserial PRIMARY KEY, body bytea NOT NULL)")

    async def store(bodies: list[bytes]) -> list[int]:
        cursor = await conn.execute(
            "INSERT INTO bench_floor (body) SELECT b FROM unnest(%b::bytea[])"
            " WITH ORDINALITY AS t(b, n) ORDER BY n RETURNING id", (bodies,))
        return sorted(row[0] for row in await cursor.fetchall())

    return store


def _sqlite(path: str) -> _Store:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("DROP TABLE IF EXISTS bench_floor")
    db.execute("CREATE TABLE bench_floor (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")

    def insert(bodies: list[bytes]) -> list[int]:
        db.execute("BEGIN")
        ids = [db.execute("INSERT INTO bench_floor (body) VALUES (?)", (body,)).lastrowid or 0
               for body in bodies]
        db.execute("COMMIT")
        return ids

    async def store(bodies: list[bytes]) -> list[int]:
        return await asyncio.to_thread(insert, bodies)

    return store


WRITER = web.AppKey("writer", _Writer)


async def receive(request: web.Request) -> web.Response:
    body = await request.read()
    writer = request.app[WRITER]
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    writer.waiting.append((body, future))
    writer.wake.set()
    callback_id = await future
    return web.Response(body=b"OK", headers={"X-Floor-Id": str(callback_id)})


def create_app(database_url: str) -> web.Application:
    app = web.Application(client_max_size=65536)
    app.router.add_post("/callbacks/{provider}", receive)
    app.router.add_post("/callbacks/{provider}/{account}", receive)
    app.router.add_get("/healthz", lambda _r: _healthz())

    async def writer(app: web.Application) -> AsyncIterator[None]:
        url = make_url(database_url)
        if url.get_backend_name() == "postgresql":
            dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
            store = await _postgres(dsn)
        else:
            store = _sqlite(url.database or ":memory:")
        app[WRITER] = _Writer(store)
        task = asyncio.get_running_loop().create_task(app[WRITER].run())
        yield
        task.cancel()

    app.cleanup_ctx.append(writer)
    return app


async def _healthz() -> web.Response:
    return web.json_response({"status": "ok"})


if __name__ == "__main__":
    web.run_app(create_app(os.environ["PAYHOOK_DATABASE_URL"]), host="127.0.0.1",
                port=int(sys.argv[1]), access_log=None, print=None, shutdown_timeout=2,
                auto_decompress=False)
