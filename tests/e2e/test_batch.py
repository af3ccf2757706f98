"""A batch shares one transaction, yet each callback ends in its own state: a poison callback
cannot fail its neighbours, and a batch processed twice changes nothing the second time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
from sqlalchemy import insert
from sqlalchemy.orm import Session

import ledger.apply
from ledger.apply import Incoming
from ledger.db import make_engine, make_sessionmaker
from ledger.models import Callback, Order
from payhook.accounts import load_accounts
from payhook.settings import Settings
from providers.base import HttpRequest
from tests.conftest import unique
from tests.harness import Stack
from workers.process import process_batch
from workers.runtime import Runtime


@pytest.fixture
def runtime(stack: Stack, database_url: str, redis_url: str) -> Iterator[Runtime]:
    """A worker runtime in this process, on the session's database and providers."""
    settings = Settings(database_url=database_url, redis_url=redis_url,
                        config=stack.workdir / "payhook.toml", max_attempts=3)
    engine = make_engine(database_url)
    rt = Runtime(settings=settings, accounts=load_accounts(settings.config), engine=engine,
                 sessions=make_sessionmaker(engine), redis=redis.Redis.from_url(redis_url))
    yield rt
    rt.close()


def store(rt: Runtime, requests: list[HttpRequest]) -> list[int]:
    """Put raw callbacks in the inbox as the receiver would, without enqueuing them."""
    now = datetime.now(UTC)
    rows = [{"provider": r.url.split("/")[2], "account": "default", "received_at": now,
             "remote_addr": "127.0.0.1", "headers": json.dumps(list(r.headers.items())),
             "body": r.body, "state": "received", "attempts": 0} for r in requests]
    with rt.engine.begin() as conn:
        result = conn.execute(insert(Callback).returning(Callback.id,
                                                          sort_by_parameter_order=True), rows)
        return [int(i) for i in result.scalars()]


@pytest.mark.parametrize("amount", ["5.001", "100000000000000000000.00"])
def test_poison_callback_does_not_fail_its_neighbours(
    stack: Stack, runtime: Runtime, amount: str
) -> None:
    """An amount the ledger refuses (finer than the currency's unit, or beyond what it can
    hold) is rejected alone, at once; the rest of its batch applies."""
    world = stack.world
    good = [world.callback("opay", world.fields("opay", unique(), "succeeded", "5.00"))
            for _ in range(4)]
    poison_fields = {**world.fields("opay", unique(), "succeeded", "5.00"), "amount": amount}
    ids = store(runtime, [good[0], good[1], world.callback("opay", poison_fields), *good[2:]])
    result = process_batch(runtime, ids)
    assert result.states == {"applied": 4, "rejected": 1}
    assert result.reasons["rejected|bad_amount"] == 1
    records = [stack.callback(i) for i in ids]
    assert [r["state"] for r in records] == ["applied", "applied", "rejected", "applied",
                                             "applied"]


def test_an_order_created_by_a_rolled_back_callback_is_created_again(
    stack: Stack, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failing callback is the first news of its order, so its savepoint creates the order
    before failing (an injected fault while moving the money) and rolls back. A good callback
    for the same order later in the batch must not reuse the vanished row: it creates the order
    anew and applies."""
    world = stack.world
    order_no = unique()
    fields = world.fields("opay", order_no, "succeeded", "5.00")
    ids = store(runtime, [world.callback("opay", fields), world.callback("opay", fields)])
    move_money = ledger.apply._move_money

    def fail_for_the_first(session: Session, order: Order, event: Incoming, now: datetime,
                           ) -> list[str]:
        if event.callback_id == ids[0]:
            raise RuntimeError("injected fault after the order was created")
        return move_money(session, order, event, now)

    monkeypatch.setattr(ledger.apply, "_move_money", fail_for_the_first)
    result = process_batch(runtime, ids)
    assert result.states == {"applied": 1, "processing": 1}
    assert [stack.callback(i)["state"] for i in ids] == ["processing", "applied"]
    order = stack.order("opay", order_no)
    assert order is not None
    assert order["status"] == "succeeded"
    assert len(order["payments"]) == 1


def test_a_batch_processed_twice_changes_nothing(stack: Stack, runtime: Runtime) -> None:
    """A redelivered batch finds its callbacks final and leaves them (and the ledger) alone."""
    world = stack.world
    order_no = unique()
    ids = store(runtime, [world.callback("otgpay",
                                         world.fields("otgpay", order_no, "succeeded", "9.00"))])
    assert process_batch(runtime, ids).states == {"applied": 1}
    assert process_batch(runtime, ids).states == {}
    order = stack.order("otgpay", order_no)
    assert order is not None
    assert len(order["history"]) == 1
    assert len(order["payments"]) == 1
