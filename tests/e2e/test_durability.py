"""Nothing acknowledged is lost or applied twice: killed workers, an emptied Redis, a dead
database, a provider that hangs up."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine, create_engine, func, select

from ingest.app import create_app
from ledger.db import make_engine
from ledger.models import Callback, Journal, Order
from payhook.accounts import load_accounts
from payhook.broker import PROCESS_TASK, make_celery
from payhook.embedded import EmbeddedRedis
from payhook.settings import Settings
from sandbox.server import ProviderServer
from sandbox.world import SandboxWorld
from tests.conftest import queue_name, unique
from tests.harness import Stack, fresh_database, store, wait_for


def _post_orders(stack: Stack, count: int, prefix: str) -> tuple[list[str], list[int]]:
    """Register `count` orders and post one signed success for each, concurrently."""
    numbers = [unique(prefix) for _ in range(count)]
    for number in numbers:
        stack.register("opay", number, "10.00")
    requests = [
        stack.world.callback("opay", stack.world.fields("opay", n, "succeeded", "10.00"))
        for n in numbers
    ]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(stack.post, requests))
    assert all(code == 200 for code, _, _ in replies)
    return numbers, [cid for _, _, cid in replies if cid is not None]


def _assert_each_applied_once(database_url: str, numbers: list[str]) -> None:
    """Every order succeeded, with exactly one balanced posting set."""
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = dict(conn.execute(
            select(Order.merchant_order_no, func.count(Journal.id))
            .join(Journal, Journal.order_id == Order.id, isouter=True)
            .where(Order.merchant_order_no.in_(numbers))
            .group_by(Order.merchant_order_no)
        ).all())
        statuses = set(conn.execute(
            select(Order.status).where(Order.merchant_order_no.in_(numbers))).scalars())
    engine.dispose()
    assert rows == dict.fromkeys(numbers, 1)
    assert statuses == {"succeeded"}


def _applied_count(engine: Engine, ids: list[int]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(
            select(func.count(Callback.id))
            .where(Callback.id.in_(ids), Callback.state == "applied")
        ).scalar_one())


def test_worker_killed_mid_batch_loses_nothing(stack: Stack, database_url: str) -> None:
    """SIGKILL of the whole worker mid-batch: every callback still ends applied, once."""
    stack.kill("worker", signal.SIGTERM)  # a backlog builds up while no worker runs
    numbers, ids = _post_orders(stack, 240, "K")
    engine = create_engine(database_url)
    stack.start_worker()
    wait_for(lambda: _applied_count(engine, ids) > 0, 60, "the first batch applied")
    stack.kill("worker")  # SIGKILL to the worker and its pool processes
    interrupted = len(ids) - _applied_count(engine, ids)
    engine.dispose()
    stack.start_worker()
    records = stack.wait_final(ids, timeout=120)
    assert {r["state"] for r in records} == {"applied"}
    assert interrupted > 0, "the kill came too late to interrupt anything"
    _assert_each_applied_once(database_url, numbers)


@pytest.fixture
def own_redis_stack(tmp_path: Path, database_url: str, world: SandboxWorld,
                    provider_server: ProviderServer) -> Iterator[tuple[Stack, EmbeddedRedis, str]]:
    """A stack with its own database and a Redis server the test may stop and restart."""
    url, drop = fresh_database(database_url, tmp_path)
    redis = EmbeddedRedis(tmp_path / "redis")
    stack = Stack(tmp_path, url, redis.start(), world, provider_server.url,
                  queue=queue_name("payhook-r"))
    stack.start()
    yield stack, redis, url
    stack.stop()
    redis.stop()
    drop()


def test_redis_restarted_empty_mid_batch_loses_nothing(
    own_redis_stack: tuple[Stack, EmbeddedRedis, str],
) -> None:
    """Redis dies with queued work and comes back empty: the sweeper re-enqueues, all apply once."""
    stack, redis, url = own_redis_stack
    numbers, ids = _post_orders(stack, 80, "R")
    redis.stop()
    # Acks do not depend on Redis: these are committed, then published by the sweeper later.
    more = [unique("R") for _ in range(5)]
    more_ids = []
    for number in more:
        fields = stack.world.fields("opay", number, "succeeded", "10.00")
        code, _, callback_id = stack.post(stack.world.callback("opay", fields))
        assert code == 200
        more_ids.append(callback_id)
    redis.start()
    records = stack.wait_final(ids + [i for i in more_ids if i is not None], timeout=120)
    assert {r["state"] for r in records} == {"applied"}
    _assert_each_applied_once(url, numbers)


def _receiver_settings(database_url: str, redis_url: str) -> Settings:
    return Settings(database_url=database_url, redis_url=redis_url,
                    queue=queue_name("payhook-db"))


@pytest.mark.parametrize("broken", ["unreachable", "no_schema"])
def test_database_down_answers_503(
    broken: str, tmp_path: Path, redis_url: str, stack: Stack,
) -> None:
    """When the commit cannot happen, the provider gets 503 and no acknowledgement."""
    if broken == "unreachable":
        url = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2"
    else:
        url = f"sqlite:///{tmp_path / 'empty.db'}"  # a database without the inbox table
    settings = _receiver_settings(url, redis_url)
    accounts = load_accounts(stack.workdir / "payhook.toml")
    request = stack.world.callback(
        "opay", stack.world.fields("opay", unique(), "succeeded", "1.00"))

    async def run() -> tuple[int, bytes]:
        engine = make_engine(url)
        app = create_app(settings, accounts, engine, make_celery(settings))
        async with TestClient(TestServer(app)) as client:
            reply = await client.post(request.url, data=request.body,
                                      headers=dict(request.headers))
            status, body = reply.status, await reply.read()
        engine.dispose()
        return status, body

    status, body = asyncio.run(run())
    assert status == 503
    assert b"SUCCESSFUL" not in body


def test_provider_hanging_up_mid_request_still_stores(stack: Stack, database_url: str) -> None:
    """A provider that sends its callback and disconnects without reading: still stored."""
    marker = unique("HANG")
    body = f'{{"hang": "{marker}"}}'.encode()
    head = (f"POST /callbacks/opay HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", stack.port)) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_RDWR)
    engine = create_engine(database_url)

    def stored() -> bool:
        with engine.connect() as conn:
            return conn.execute(
                select(func.count(Callback.id)).where(Callback.body == body)
            ).scalar_one() == 1

    wait_for(stored, 15, "the hung-up callback stored")
    engine.dispose()


def _claimed(engine: Engine, callback_id: int) -> tuple[int, str | None]:
    """The callback's attempts so far, and the task running one now."""
    with engine.connect() as conn:
        attempts, claimed_at, claimed_by = conn.execute(
            select(Callback.attempts, Callback.claimed_at, Callback.claimed_by)
            .where(Callback.id == callback_id)
        ).one()
    return int(attempts), claimed_by if claimed_at is not None else None


def test_a_callback_that_kills_its_worker_ends_dead_and_its_batch_applies(
    stack: Stack, database_url: str, redis_url: str
) -> None:
    """Every attempt at one callback dies with its pool process (SIGKILL while it waits on the
    provider, as the kernel's OOM killer would): it ends `dead` with reason `worker_lost` after
    `max_attempts` (3) attempts alone instead of being redelivered forever, and the callbacks
    that shared its batch still apply, once. The batch's attempt, killed with no one callback
    to blame, is given back to each when the redelivered batch is split."""
    stack.kill("worker", signal.SIGTERM)
    killer_no = unique("KL")
    stack.register("mtpay", killer_no, "100.00")
    fields = stack.world.fields("mtpay", killer_no, "succeeded", "100.00")
    stack.world.publish("mtpay", fields)
    numbers = [unique("KN") for _ in range(8)]
    for number in numbers:
        stack.register("opay", number, "10.00")
    neighbours = [stack.world.callback("opay", stack.world.fields("opay", n, "succeeded", "10.00"))
                  for n in numbers]
    engine = create_engine(database_url)
    ids = store(engine, [*neighbours[:4], stack.world.callback("mtpay", fields), *neighbours[4:]])
    killer = ids[4]
    settings = Settings(redis_url=redis_url, queue=stack.env["PAYHOOK_QUEUE"])
    batch = make_celery(settings).send_task(PROCESS_TASK, args=[ids]).id  # as the dispatcher's
    stack.world.stalled["mtpay"] = 60.0  # MTPay callbacks are confirmed by a query: it hangs
    try:
        stack.start_worker(concurrency=1)  # one pool process: the kills hit nothing else
        pool = psutil.Process(stack.procs["worker"].pid)
        for attempt, task in ((1, batch), (1, "alone"), (2, "alone"), (3, "alone")):

            def running(a: int = attempt, t: str = task) -> bool:
                attempts, by = _claimed(engine, killer)
                return attempts == a and by is not None and (by == batch) == (t == batch)

            wait_for(running, 60, f"attempt {attempt} running in the {task} task")
            for child in pool.children():
                child.kill()
        [record] = stack.wait_final([killer], timeout=60)
    finally:
        stack.world.stalled.pop("mtpay", None)
        engine.dispose()
    assert (record["state"], record["reason"], record["attempts"]) == ("dead", "worker_lost", 3)
    records = stack.wait_final(ids[:4] + ids[5:], timeout=60)
    assert [(r["state"], r["attempts"]) for r in records] == [("applied", 1)] * 8
    _assert_each_applied_once(database_url, numbers)
    stack.kill("worker", signal.SIGTERM)
    stack.start_worker()


def test_a_task_over_its_time_limit_is_killed_and_the_attempt_counted(
    tmp_path: Path, database_url: str, redis_url: str, world: SandboxWorld,
    provider_server: ProviderServer,
) -> None:
    """An attempt that hangs (the provider's query never answers) is killed by the pool at the
    task time limit (2 s here); the sweeper sends the callback again, and once `max_attempts`
    (2) attempts have been killed it is `dead` with reason `worker_lost`."""
    url, drop = fresh_database(database_url, tmp_path)
    stack = Stack(tmp_path, url, redis_url, world, provider_server.url,
                  queue=queue_name("payhook-tl"), PAYHOOK_TASK_TIME_LIMIT_S="2",
                  PAYHOOK_MAX_ATTEMPTS="2")
    order_no = unique("TL")
    fields = world.fields("mtpay", order_no, "succeeded", "100.00")
    world.publish("mtpay", fields)
    world.stalled["mtpay"] = 30.0
    try:
        stack.start()
        code, _, callback_id = stack.post(world.callback("mtpay", fields))
        assert code == 200
        assert callback_id is not None
        [record] = stack.wait_final([callback_id], timeout=90)
    finally:
        world.stalled.pop("mtpay", None)
        stack.stop()
        drop()
    assert (record["state"], record["reason"], record["attempts"]) == ("dead", "worker_lost", 2)
    assert "TimeLimitExceeded" in (tmp_path / "worker.log").read_text()
