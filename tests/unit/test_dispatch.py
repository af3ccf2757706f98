"""The dispatcher against a Redis that restarts or hangs: a brief failure loses nothing to the
sweeper's delay, what it holds stays bounded, and what it drops is still the sweeper's to send
(rows in a fresh database of the session's kind)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Callable, Iterator
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
from payhook.embedded import EmbeddedRedis
from payhook.settings import Settings
from tests.conftest import queue_name
from tests.harness import fresh_database
from workers.runtime import Runtime
from workers.sweeper import sweep

CAP = 500
BATCH = 64
# Back-off short enough for a test; the give-up bound is set per test.
FAST = {"retry_after_s": 0.01, "max_retry_wait_s": 0.05, "retry_budget_s": 600.0}


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
    # Stopping, a batch whose push failed is given up whole, not retried: two pushes tried (the
    # first batch, then what waited meanwhile), not one per 64 ids, each waiting out the timeout.
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

    assert set(ids) <= _swept(database_url, ids)


def _swept(database_url: str, ids: list[int]) -> set[int]:
    """What the sweeper's own selection takes, after checking nothing marked `ids` enqueued."""
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
    return set(swept)


async def _until(done: Callable[[], bool]) -> None:
    """Wait, on the loop, until `done()`; a minute at most (a guard against a hang, not a
    measure: the test's assertions say what went wrong)."""
    for _ in range(6000):
        if done():
            return
        await asyncio.sleep(0.01)


def _queued_ids(url: str, queue: str) -> list[int]:
    """Every callback id in the task messages waiting on `queue`."""
    client = redis.Redis.from_url(url)
    try:
        messages = client.lrange(queue, 0, -1)
    finally:
        client.close()
    ids: list[int] = []
    for message in messages:
        args, _kwargs, _embed = json.loads(base64.b64decode(json.loads(message)["body"]))
        ids += args[0]
    return ids


def test_ids_held_through_a_redis_restart_all_reach_the_queue(tmp_path: Path) -> None:
    """Redis stops between two pushes and comes back on its port: the pushes it refused
    meanwhile are retried, and every id submitted while it was down reaches the queue; none
    is dropped to wait for the sweeper."""
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    queue = queue_name("payhook-restart")
    publisher = AsyncPublisher(Settings(redis_url=url, queue=queue, publish_timeout_s=2))
    refused: list[int] = []

    async def publish(ids: list[int]) -> None:
        try:
            await publisher(ids)
        except Exception:
            refused.append(len(ids))
            raise

    dispatcher = Dispatcher(publish, max_ids=10, linger_s=0, max_backlog=CAP,
                            max_attempts=10_000, **FAST)
    first, held = list(range(1, 11)), list(range(11, 211))
    restarted = EmbeddedRedis(tmp_path / "redis", port=server.port)

    async def scenario() -> None:
        await dispatcher.start()
        dispatcher.submit(first)
        await _until(lambda: dispatcher.published == len(first))
        await asyncio.to_thread(server.stop)
        dispatcher.submit(held)  # 20 pushes' worth, the first refused
        await _until(lambda: bool(refused) or dispatcher.dropped > 0)
        await asyncio.to_thread(restarted.start)
        await _until(lambda: dispatcher.published + dispatcher.dropped == len(first + held))
        await dispatcher.stop(timeout_s=30)
        await publisher.close()

    try:
        asyncio.run(scenario())
        queued = _queued_ids(url, queue)  # the restarted server's: `first` went with the old
    finally:
        restarted.stop()
        server.stop()
    assert refused
    assert (dispatcher.dropped, dispatcher.published, dispatcher.pending) == (0, 210, 0)
    assert sorted(set(queued)) == held  # every one; a push that failed late may repeat some


def test_a_redis_that_never_answers_is_retried_a_bounded_number_of_times(
    own_database: str,
) -> None:
    """Redis accepts connections and never answers: the first batch is tried `max_attempts`
    times and given up, the ids that waited meanwhile get one try (the failures go on), and
    nothing piles up past `max_backlog` while the retries run; every dropped id is counted by
    reason and left to the sweeper."""
    ids = _commit(own_database, 1200)
    metrics = ReceiverMetrics()
    with socket.create_server(("127.0.0.1", 0)) as listener, capture_logs() as logs:
        listener.settimeout(30)
        port = listener.getsockname()[1]  # the kernel completes connects; none is answered
        publisher = AsyncPublisher(Settings(redis_url=f"redis://127.0.0.1:{port}/0",
                                            queue="payhook-hung", publish_timeout_s=0.2))
        dispatcher = Dispatcher(publisher, max_ids=BATCH, linger_s=0, max_backlog=CAP,
                                on_dropped=metrics.count_dropped, max_attempts=3, **FAST)

        def tried_again_or_gave_up() -> bool:
            return any(e["event"] in ("publish_retry", "publish_failed") for e in logs)

        async def scenario() -> list[int]:
            await dispatcher.start()
            dispatcher.submit(ids[:BATCH])
            conn, _ = await asyncio.to_thread(listener.accept)  # the first push, in flight
            with conn:
                held = []
                for start in range(BATCH, 664, 100):
                    dispatcher.submit(ids[start : start + 100])
                    held.append(dispatcher.pending)
                await _until(tried_again_or_gave_up)
                for start in range(664, len(ids), 100):  # commits go on during the retries
                    dispatcher.submit(ids[start : start + 100])
                    held.append(dispatcher.pending)
                await _until(lambda: dispatcher.dropped == len(ids))  # given up, not stopped
                await dispatcher.stop(timeout_s=30)
            await publisher.close()
            return held

        held = asyncio.run(scenario())

    assert max(held) == CAP
    assert (dispatcher.published, dispatcher.dropped, dispatcher.pending) == (0, len(ids), 0)
    assert [(e["attempt"], e["ids"]) for e in logs if e["event"] == "publish_retry"] == [
        (1, BATCH), (2, BATCH)]
    failed = [(e["failures"], e["ids"]) for e in logs if e["event"] == "publish_failed"]
    assert failed == [(3, BATCH), (4, CAP - BATCH)]
    assert _sample(metrics.registry, "publish_failed") == CAP
    assert _sample(metrics.registry, "backlog_full") == len(ids) - CAP
    assert set(ids) <= _swept(own_database, ids)


def test_stop_cuts_a_retry_wait_short_and_counts_what_it_gives_up() -> None:
    """Redis is down (a closed port) and the next retry is ten minutes away: `stop` ends the
    wait, tries once more, and drops what it held to the sweeper, counted, instead of being
    cut off at its own timeout with the ids neither published nor dropped."""
    publisher = AsyncPublisher(Settings(redis_url="redis://127.0.0.1:1/0", queue="payhook-down",
                                        publish_timeout_s=1))
    dispatcher = Dispatcher(publisher, max_ids=10, linger_s=0, max_attempts=10,
                            retry_after_s=600, max_retry_wait_s=600)

    async def scenario() -> None:
        await dispatcher.start()
        with capture_logs() as logs:
            dispatcher.submit(list(range(1, 101)))
            await _until(lambda: any(e["event"] == "publish_retry" for e in logs))
            await dispatcher.stop(timeout_s=30)
        await publisher.close()
        assert [e["event"] for e in logs if e["event"].startswith("publish_")] == [
            "publish_retry", "publish_failed"]

    asyncio.run(scenario())
    assert (dispatcher.published, dispatcher.dropped, dispatcher.pending) == (0, 100, 0)
