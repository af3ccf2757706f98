"""The receiver's two hand-offs, against the session's real database and Redis: the group-commit
inbox (each request gets the id of its own row) and the publisher (a task message any Celery
worker reads like one `send_task` wrote)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
import redis
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url

from ingest.dispatch import Dispatcher
from ingest.inbox import Inbox, InboxUnavailable
from ingest.stores import Received
from ledger.db import make_engine
from ledger.models import Callback
from payhook.broker import PROCESS_TASK, AsyncPublisher, Publisher, make_celery
from payhook.settings import Settings
from tests.conftest import queue_name

T = TypeVar("T")


def _item(n: int) -> Received:
    return Received(
        provider="opay",
        account="default",
        received_at=datetime.now(UTC),
        remote_addr=None if n % 3 else "10.0.0.1",
        headers=json.dumps([["X-N", str(n)]]),
        body=f"body-{n}-".encode() + bytes([n % 256, 0, 255]),  # not UTF-8: stored as given
    )


async def _put_all(inbox: Inbox, items: list[Received]) -> list[int]:
    return list(await asyncio.gather(*(inbox.put(i) for i in items)))


def _with_inbox(inbox: Inbox, scenario: Callable[[], Awaitable[T]]) -> T:
    """Run `scenario` on a loop where `inbox` is started, and stopped (drained) after it."""

    async def run() -> T:
        await inbox.start()
        try:
            return await scenario()
        finally:
            await inbox.stop()

    return asyncio.run(run())


def test_each_request_gets_the_id_of_its_own_row(database_url: str) -> None:
    """300 concurrent requests, grouped into commits by two writers: every id is distinct and
    names the row holding that request's exact bytes."""
    engine = make_engine(database_url)
    committed: list[int] = []
    lock = threading.Lock()

    timings: list[tuple[float, int]] = []

    def on_committed(ids: list[int]) -> None:
        with lock:
            committed.extend(ids)

    inbox = Inbox(engine, on_committed, on_timing=lambda s, n: timings.append((s, n)))
    items = [_item(n) for n in range(300)]
    ids = _with_inbox(inbox, lambda: _put_all(inbox, items))
    assert len(set(ids)) == len(items)
    assert sorted(committed) == sorted(ids)
    assert inbox.commits < len(items)  # grouped, not one commit per request
    # One timing per commit, covering every row, each a real (positive) duration.
    assert len(timings) == inbox.commits
    assert sum(n for _, n in timings) == len(items)
    assert all(seconds > 0 for seconds, _ in timings)
    with engine.connect() as conn:
        rows = {
            r.id: r
            for r in conn.execute(select(Callback).where(Callback.id.in_(ids))).all()
        }
    for callback_id, item in zip(ids, items, strict=True):
        row = rows[callback_id]
        assert (row.body, row.headers, row.remote_addr) == (item.body, item.headers,
                                                             item.remote_addr)
        assert row.received_at == item.received_at
        assert row.state == "received"
    engine.dispose()


def test_every_column_is_stored_exactly_as_received(database_url: str) -> None:
    """Awkward values come back unchanged: an empty body and one of every byte, an account and a
    header value beyond ASCII, no remote address, a time given in another zone (the same
    instant, back in UTC) with its microseconds. A naive time is refused, with its group, and
    nothing of that group is stored."""
    engine = make_engine(database_url)
    east = timezone(timedelta(hours=3, minutes=30))
    items = [
        Received("opay", "café-ünïcode", datetime(2026, 3, 1, 2, 3, 4, 5, tzinfo=east), None,
                 json.dumps([["X-Name", "Zoë \u2028 ☃"]]), b""),
        Received("mtpay", "default", datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                 "2001:db8::1", "[]", bytes(range(256)) * 4),
    ]
    inbox = Inbox(engine, lambda ids: None, writers=1)

    async def scenario() -> tuple[list[int], BaseException | int]:
        ids = await _put_all(inbox, items)
        naive = items[1]._replace(received_at=datetime(2026, 1, 1), body=b"naive")
        try:
            return ids, await inbox.put(naive)
        except InboxUnavailable as exc:
            return ids, exc

    ids, naive = _with_inbox(inbox, scenario)
    assert isinstance(naive, InboxUnavailable)
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(Callback).where(Callback.id.in_(ids)))}
        assert conn.execute(select(Callback.id).where(Callback.body == b"naive")).all() == []
    for callback_id, item in zip(ids, items, strict=True):
        row = rows[callback_id]
        stored = (row.provider, row.account, row.remote_addr, row.headers, row.body)
        assert stored == (item.provider, item.account, item.remote_addr, item.headers, item.body)
        assert row.received_at == item.received_at
        assert row.received_at.utcoffset() == timedelta(0)
    engine.dispose()


def test_a_failed_commit_answers_every_request_unavailable(tmp_path: Path) -> None:
    """No table: nothing is stored, and each waiting request learns it (the route says 503)."""
    engine = make_engine(f"sqlite:///{tmp_path}/empty.db")
    handed_on: list[int] = []
    timings: list[tuple[float, int]] = []
    inbox = Inbox(engine, handed_on.extend, on_timing=lambda s, n: timings.append((s, n)))

    async def attempt() -> list[BaseException | int]:
        return await asyncio.gather(*(inbox.put(_item(n)) for n in range(5)),
                                    return_exceptions=True)

    results = _with_inbox(inbox, attempt)
    assert all(isinstance(r, InboxUnavailable) for r in results)
    assert handed_on == []
    assert timings == []  # a failed group is not timed as a commit
    engine.dispose()


def _named_pg_engine(database_url: str, why: str) -> tuple[Engine, str]:
    """An engine whose connections carry an application name of their own (so the test can
    find the writer's backend); skips the test off PostgreSQL, saying `why` it needs it."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        pytest.skip(f"PostgreSQL only: {why}")
    name = f"inbox-test-{queue_name('w')}"
    engine = make_engine(url.update_query_dict({"application_name": name})
                         .render_as_string(hide_password=False))
    return engine, name


def _bodies(engine: Engine, ids: list[int]) -> list[bytes]:
    """The stored body of each callback id, in order."""
    with engine.connect() as conn:
        bodies = dict(conn.execute(select(Callback.id, Callback.body).where(
            Callback.id.in_(ids))).tuples().all())
    return [bodies[i] for i in ids]


def test_a_writer_whose_connection_died_stores_the_next_group_on_a_fresh_one(
    database_url: str,
) -> None:
    """The writer keeps its connection between groups. If the server drops it (restart, proxy
    timeout), the writer sees it closed before sending the next group, which goes to a new
    connection: its requests are acknowledged, not refused."""
    engine, name = _named_pg_engine(database_url, "it terminates the writer's server backend")
    inbox = Inbox(engine, lambda ids: None, writers=1)

    def kill() -> int:
        admin = make_engine(database_url)
        with admin.connect() as conn:
            # Wait (up to 5 s) for the backend to be gone, as after a restart: the writer must
            # see the dead connection before it sends, whatever the timing.
            killed = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
                " WHERE application_name = :n"), {"n": name}).scalar_one()
        admin.dispose()
        return int(killed)

    async def scenario() -> tuple[list[int], int, list[int]]:
        before = await _put_all(inbox, [_item(1)])
        killed = await asyncio.to_thread(kill)
        return before, killed, await _put_all(inbox, [_item(2), _item(3)])

    before, killed, after = _with_inbox(inbox, scenario)
    assert killed == 1  # the writer's kept connection, idle between groups
    assert _bodies(engine, before + after) == [_item(n).body for n in (1, 2, 3)]
    engine.dispose()


def test_a_group_the_server_refused_is_written_again_on_a_fresh_connection(
    database_url: str,
) -> None:
    """An error the server answers (here a trigger that refuses inserts from the writer's
    backend) rolls the statement back: nothing of the group is stored, so the writer sends it
    once more on a new connection, and the requests are acknowledged with their own rows."""
    engine, name = _named_pg_engine(database_url, "a trigger refuses the writer's backend")
    admin = make_engine(database_url)
    inbox = Inbox(engine, lambda ids: None, writers=1)

    def refuse() -> int:
        with admin.begin() as conn:
            pid = int(conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE application_name = :n"),
                {"n": name}).scalar_one())
            conn.execute(text(f"""
                CREATE FUNCTION refuse_{pid}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF pg_backend_pid() = {pid} THEN RAISE EXCEPTION 'refused for the test'; END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER refuse_{pid} BEFORE INSERT ON callbacks
                    FOR EACH ROW EXECUTE FUNCTION refuse_{pid}();"""))
        return pid

    def allow(pid: int) -> None:
        with admin.begin() as conn:
            conn.execute(text(f"DROP TRIGGER refuse_{pid} ON callbacks;"
                              f" DROP FUNCTION refuse_{pid}()"))

    async def scenario() -> tuple[list[int], list[int]]:
        before = await _put_all(inbox, [_item(1)])
        pid = await asyncio.to_thread(refuse)
        try:
            return before, await _put_all(inbox, [_item(2), _item(3)])
        finally:
            await asyncio.to_thread(allow, pid)

    try:
        before, after = _with_inbox(inbox, scenario)
    finally:
        admin.dispose()
    assert _bodies(engine, before + after) == [_item(n).body for n in (1, 2, 3)]
    engine.dispose()


@contextlib.contextmanager
def _writes_blocked(database_url: str) -> Iterator[Callable[[], None]]:
    """Another session holds a lock that makes the inbox's INSERT wait; the function it yields
    lets go of it (also done on exit; letting go twice is harmless)."""
    url = make_url(database_url)
    held: psycopg.Connection[tuple[object, ...]] | sqlite3.Connection
    if url.get_backend_name() == "postgresql":
        held = psycopg.connect(url.set(drivername="postgresql").render_as_string(
            hide_password=False))
        held.execute("LOCK TABLE callbacks IN SHARE MODE")  # blocks every INSERT
    else:
        held = sqlite3.connect(url.database or "", isolation_level=None)
        held.execute("BEGIN EXCLUSIVE")
    try:
        yield held.rollback  # a no-op for either driver once nothing is held
    finally:
        held.rollback()
        held.close()


def test_a_group_with_no_answer_in_time_is_refused_and_the_writer_goes_on(
    database_url: str,
) -> None:
    """A lock held on the table makes the group's INSERT wait with no end: after the write
    timeout its requests are answered unavailable (503) instead of waiting with it, and once
    the lock is gone the same writer stores the next group."""
    if make_url(database_url).get_backend_name() != "postgresql":
        pytest.skip("PostgreSQL only: another session holds a table lock against the writer")
    engine = make_engine(database_url)
    inbox = Inbox(engine, lambda ids: None, writers=1, write_timeout_s=0.5)

    async def scenario() -> tuple[BaseException | int, float, list[int]]:
        await _put_all(inbox, [_item(1)])  # the writer's connection is up and idle
        with _writes_blocked(database_url):
            started = time.monotonic()
            (blocked,) = await asyncio.gather(inbox.put(_item(2)), return_exceptions=True)
            waited = time.monotonic() - started
        return blocked, waited, await _put_all(inbox, [_item(3)])

    blocked, waited, after = _with_inbox(inbox, scenario)
    assert isinstance(blocked, InboxUnavailable)
    assert waited < 5  # the timeout and the cancellation, not the lock, ended the wait
    assert _bodies(engine, after) == [_item(3).body]
    engine.dispose()


def test_past_its_bound_the_backlog_refuses_at_once_and_keeps_what_it_took(
    database_url: str,
) -> None:
    """While the database does not answer, requests wait for their commit. Once the waiting
    requests' bodies and headers reach `max_pending_bytes`, the next request is refused at once
    (503) instead of queued; the ones taken are stored when the database answers again, and
    their bytes no longer count."""
    engine = make_engine(database_url)
    held = [_item(n) for n in (2, 3, 4)]
    bound = sum(len(i.body) + len(i.headers) for i in held)
    inbox = Inbox(engine, lambda ids: None, writers=1, max_pending_bytes=bound)

    async def scenario() -> tuple[BaseException | None, float, list[int], list[int]]:
        await _put_all(inbox, [_item(1)])  # the writer is up
        with _writes_blocked(database_url) as let_go:
            waiting = [asyncio.ensure_future(inbox.put(i)) for i in held]
            await asyncio.sleep(0.2)  # the first is in a group stuck on the lock
            started = time.monotonic()
            try:
                await inbox.put(_item(5))
                refused: BaseException | None = None
            except InboxUnavailable as exc:
                refused = exc
            took = time.monotonic() - started
            assert not any(w.done() for w in waiting)
            let_go()
            stored = list(await asyncio.gather(*waiting))
        return refused, took, stored, await _put_all(inbox, [_item(6)])

    refused, took, stored, after = _with_inbox(inbox, scenario)
    assert isinstance(refused, InboxUnavailable)
    assert str(refused) == "inbox backlog full"
    assert took < 0.1  # refused on the spot, not after waiting on the lock
    assert _bodies(engine, stored + after) == [_item(n).body for n in (2, 3, 4, 6)]
    engine.dispose()


def _settings(redis_url: str, queue: str) -> Settings:
    return Settings(redis_url=redis_url, queue=queue)


def test_the_publisher_writes_the_message_send_task_writes(redis_url: str) -> None:
    """Same envelope, headers, properties and body as Celery's own `send_task` for the same
    call; only the ids that are fresh per message differ."""
    queue = queue_name("payhook-pub")
    settings = _settings(redis_url, queue)
    client = redis.Redis.from_url(redis_url)
    celery = make_celery(settings)
    celery.send_task(PROCESS_TASK, args=[[7, 8, 9]], retry=False)
    publisher = Publisher(settings)
    publisher([7, 8, 9])
    publisher.close()
    ours, theirs = (json.loads(m) for m in client.lrange(queue, 0, -1))  # LPUSH: newest first
    client.close()
    assert ours.keys() == theirs.keys()
    for part in ("headers", "properties"):
        assert ours[part].keys() == theirs[part].keys()
    fresh = {"id", "root_id", "origin", "correlation_id", "reply_to", "delivery_tag"}
    for part in ("headers", "properties"):
        for key, value in theirs[part].items():
            if key not in fresh:
                assert ours[part][key] == value, key
    assert ours["headers"]["root_id"] == ours["headers"]["id"]
    assert ours["properties"]["correlation_id"] == ours["headers"]["id"]
    assert json.loads(base64.b64decode(ours["body"])) == json.loads(
        base64.b64decode(theirs["body"]))
    assert {k: ours[k] for k in ("content-type", "content-encoding")} == {
        k: theirs[k] for k in ("content-type", "content-encoding")}


def test_the_dispatcher_merges_small_hand_offs_into_one_task(redis_url: str) -> None:
    queue = queue_name("payhook-disp")
    publisher = AsyncPublisher(_settings(redis_url, queue))
    dispatcher = Dispatcher(publisher, max_ids=64, linger_s=0.2)

    async def scenario() -> None:
        await dispatcher.start()
        for n in range(10):
            dispatcher.submit([n * 2, n * 2 + 1])
        await dispatcher.stop()
        await publisher.close()

    asyncio.run(scenario())
    client = redis.Redis.from_url(redis_url)
    messages = [json.loads(m) for m in client.lrange(queue, 0, -1)]
    client.close()
    assert len(messages) == 1
    assert dispatcher.tasks == 1
    args, _kwargs, _embed = json.loads(base64.b64decode(messages[0]["body"]))
    assert args == [list(range(20))]


def test_a_failed_publish_is_logged_not_raised() -> None:
    """Redis unreachable: the ids stay committed for the sweeper; the dispatcher carries on."""
    publisher = AsyncPublisher(Settings(redis_url="redis://127.0.0.1:1/0", queue="nowhere",
                                        publish_timeout_s=0.2))
    dispatcher = Dispatcher(publisher, max_ids=64, linger_s=0.0)

    async def scenario() -> None:
        await dispatcher.start()
        dispatcher.submit([1, 2, 3])
        await dispatcher.stop()
        await publisher.close()

    asyncio.run(scenario())
    assert (dispatcher.published, dispatcher.tasks) == (0, 0)
