"""The sweeper against a database of its own and a broker that refuses connections: what it
could not send is sent by the next sweep, not a whole `sweep_after_s` later."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import insert, select

import workers.sweeper
from ledger.db import make_engine, make_sessionmaker
from ledger.models import Callback
from payhook.accounts import load_accounts
from payhook.broker import PROCESS_TASK, make_celery
from payhook.embedded import free_port
from payhook.settings import Settings
from tests.harness import fresh_database
from workers.runtime import Runtime
from workers.sweeper import sweep


@pytest.fixture
def runtime(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Runtime]:
    """A worker runtime on a fresh database: no other test's callbacks, no stack's sweeper."""
    url, drop = fresh_database(database_url, tmp_path)
    settings = Settings(database_url=url, redis_url=redis_url)
    engine = make_engine(url)
    rt = Runtime(settings=settings, accounts=load_accounts(tmp_path / "none.toml"),
                 engine=engine, sessions=make_sessionmaker(engine),
                 redis=redis.Redis.from_url(redis_url))
    yield rt
    rt.close()
    drop()


@pytest.fixture
def dead_broker() -> Iterator[Callable[[list[int]], object]]:
    """Sends a processing task as the sweep task does, to a Redis port nothing listens on."""
    app = make_celery(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0",
                               publish_timeout_s=1))
    yield lambda chunk: app.send_task(PROCESS_TASK, args=[chunk], retry=False)
    app.close()


def _overdue(rt: Runtime, count: int) -> list[int]:
    """`count` callbacks received an hour ago, never enqueued; their ids, oldest first."""
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    rows = [{"provider": "opay", "account": "default", "received_at": long_ago + timedelta(
        seconds=n), "remote_addr": None, "headers": "[]", "body": b"{}", "state": "received",
        "attempts": 0} for n in range(count)]
    with rt.engine.begin() as conn:
        result = conn.execute(insert(Callback).returning(Callback.id,
                                                          sort_by_parameter_order=True), rows)
        return [int(i) for i in result.scalars()]


def _stamps(rt: Runtime, ids: list[int]) -> dict[int, datetime | None]:
    with rt.engine.connect() as conn:
        rows = conn.execute(select(Callback.id, Callback.enqueued_at).where(Callback.id.in_(ids)))
        return {int(i): stamp for i, stamp in rows}


def test_what_a_sweep_could_not_send_goes_with_the_next_sweep(
    runtime: Runtime, dead_broker: Callable[[list[int]], object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker goes away after the first chunk: the chunks sent keep their stamp (not due
    again before `sweep_after_s`), the rest are left unstamped and the next sweep sends them."""
    monkeypatch.setattr(workers.sweeper, "CHUNK", 2)
    ids = _overdue(runtime, 5)
    sent: list[int] = []

    def enqueue(chunk: list[int]) -> None:
        if sent:  # the broker is gone after the first chunk
            dead_broker(chunk)
        sent.extend(chunk)

    assert sweep(runtime, enqueue) == 2
    assert sent == ids[:2]
    stamps = _stamps(runtime, ids)
    assert all(stamps[i] is not None for i in ids[:2])
    assert all(stamps[i] is None for i in ids[2:])
    again: list[int] = []
    assert sweep(runtime, again.extend) == 3
    assert again == ids[2:]
    assert all(stamp is not None for stamp in _stamps(runtime, ids).values())


def test_a_sweep_with_the_broker_down_leaves_every_callback_for_the_next(
    runtime: Runtime, dead_broker: Callable[[list[int]], object],
) -> None:
    """Nothing sent, nothing stamped: the whole sweep goes again at the next one."""
    ids = _overdue(runtime, 3)
    assert sweep(runtime, dead_broker) == 0
    assert set(_stamps(runtime, ids).values()) == {None}
    again: list[int] = []
    assert sweep(runtime, again.extend) == 3
    assert again == ids
