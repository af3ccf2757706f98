"""The group-commit inbox when its database misbehaves: a dropped connection, a group the
server refused, a group with no answer in time, and a backlog at its bound; each request is
answered (stored or unavailable) and the writer goes on."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url

from ingest.inbox import Inbox, InboxUnavailable
from ledger.db import make_engine
from ledger.models import Callback
from tests.conftest import queue_name
from tests.unit.test_inbox import _item, _put_all, _with_inbox


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
