"""Nothing acknowledged is lost or applied twice: killed workers, an emptied Redis, a dead
database, a provider that hangs up."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine, create_engine, func, select

from ingest.app import create_app
from ledger.db import make_engine
from ledger.models import Callback, Journal, Order
from payhook.accounts import load_accounts
from payhook.broker import make_celery
from payhook.embedded import EmbeddedRedis
from payhook.settings import Settings
from sandbox.world import ProviderServer, SandboxWorld
from tests.conftest import queue_name, unique
from tests.harness import Stack, fresh_database, wait_for


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
