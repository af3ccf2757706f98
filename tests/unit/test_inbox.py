"""The group-commit inbox against the session's real database: each request gets the id of its
own row, every column is stored as received, and a failed commit answers every waiting request
unavailable. Its faults (a dropped connection, a refused or stalled group, a full backlog) are
in test_inbox_faults.py."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

from sqlalchemy import select

from ingest.inbox import Inbox, InboxUnavailable
from ingest.stores import Received
from ledger.db import make_engine
from ledger.models import Callback

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
