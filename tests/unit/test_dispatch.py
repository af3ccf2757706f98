"""The dispatcher against a Redis that hangs: what it holds stays bounded, and what it drops
is still the sweeper's to send (rows in a fresh database of the session's kind)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from structlog.testing import capture_logs

from ingest.dispatch import Dispatcher
from ingest.inbox import Inbox
from ingest.metrics import ReceiverMetrics
from ingest.stores import Received
from ledger.db import make_engine, make_sessionmaker
from ledger.models import Callback
from payhook.accounts import Accounts
from payhook.broker import AsyncPublisher
from payhook.settings import Settings
from tests.harness import fresh_database
from workers.runtime import Runtime
from workers.sweeper import sweep

CAP = 500
BATCH = 64


def _commit(database_url: str, count: int) -> list[int]:
    """`count` callbacks committed through a real inbox, received long ago (overdue for the
    sweeper); their ids."""
    inbox = Inbox(make_engine(database_url), lambda ids: None)
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    items = [Received("opay", "default", long_ago, None, "[]", b"dispatch-%d" % n)
             for n in range(count)]

    async def run() -> list[int]:
        await inbox.start()
        try:
            return list(await asyncio.gather(*(inbox.put(i) for i in items)))
        finally:
            await inbox.stop()

    return asyncio.run(run())


def _sample(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value("payhook_dispatch_dropped_total", {"reason": reason})
    return value or 0.0


@pytest.fixture
def own_database(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A fresh database: a stack another test left running (its sweeper and worker) would
    otherwise take these overdue rows and process them."""
    url, drop = fresh_database(database_url, tmp_path)
    yield url
    drop()


def test_while_redis_hangs_the_backlog_stays_bounded_and_the_sweeper_gets_what_it_dropped(
    own_database: str,
) -> None:
    """Redis accepts the connection and never answers: the first push waits out the publish
    timeout while callbacks keep being committed. The dispatcher holds at most `max_backlog`
    ids; the rest, and the failed batch, are dropped, counted, logged and exposed by reason,
    never marked enqueued, and the sweeper's own selection takes every one of them."""
    database_url = own_database
    ids = _commit(database_url, 1564)
    metrics = ReceiverMetrics()
    with socket.create_server(("127.0.0.1", 0)) as listener, capture_logs() as logs:
        listener.settimeout(30)
        port = listener.getsockname()[1]
        publisher = AsyncPublisher(Settings(redis_url=f"redis://127.0.0.1:{port}/0",
                                            queue="payhook-hung", publish_timeout_s=1))
        dispatcher = Dispatcher(publisher, max_ids=BATCH, linger_s=0, max_backlog=CAP,
                                on_dropped=metrics.count_dropped)

        async def scenario() -> list[int]:
            await dispatcher.start()
            dispatcher.submit(ids[:BATCH])  # a full batch: pushed at once
            conn, _ = await asyncio.to_thread(listener.accept)  # in flight, never answered
            with conn:
                held = []
                for start in range(BATCH, len(ids), 100):  # commits go on meanwhile
                    dispatcher.submit(ids[start : start + 100])
                    held.append(dispatcher.pending)
                await dispatcher.stop(timeout_s=30)
            await publisher.close()
            return held

        held = asyncio.run(scenario())

    assert max(held) == CAP
    assert (dispatcher.published, dispatcher.tasks, dispatcher.dropped) == (0, 0, len(ids))
    # A batch whose push failed is given up whole: two pushes tried (the first batch, then
    # what waited meanwhile), not one per 64 ids, each waiting out the timeout.
    failed = [e["ids"] for e in logs if e["event"] == "publish_failed"]
    assert len(failed) == 2
    logged = {"dispatch_backlog_full": sum(e["dropped"] for e in logs
                                           if e["event"] == "dispatch_backlog_full"),
              "publish_failed": sum(failed)}
    assert logged["dispatch_backlog_full"] > 0
    assert logged["publish_failed"] > 0
    assert _sample(metrics.registry, "backlog_full") == logged["dispatch_backlog_full"]
    assert _sample(metrics.registry, "publish_failed") == logged["publish_failed"]
    assert sum(logged.values()) == len(ids)

    engine = make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(Callback.state, Callback.enqueued_at).where(
            Callback.id.in_(ids))).all()
    assert len(rows) == len(ids)
    assert set(rows) == {("received", None)}  # nothing marked them enqueued
    nowhere = "redis://127.0.0.1:1/0"  # the sweep is given its enqueue; Redis is not used
    runtime = Runtime(settings=Settings(database_url=database_url, redis_url=nowhere),
                      accounts=Accounts(), engine=engine, sessions=make_sessionmaker(engine),
                      redis=redis.Redis.from_url(nowhere))
    swept: list[int] = []
    try:
        sweep(runtime, swept.extend)
    finally:
        runtime.close()
    assert set(ids) <= set(swept)
