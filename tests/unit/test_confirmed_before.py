"""A replayed confirm-by-query callback whose order the provider no longer knows, processed by
a worker's batch on the real database and Redis against MTPay's query API stand-in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

from ledger.models import Callback, OrderEvent
from ledger.replay import reset_for_replay
from ledger.views import balances, find_order
from providers.http import RetryPolicy
from sandbox.wire import mtpay as wire
from tests.conftest import unique
from tests.harness import store
from tests.reconcile.harness import (
    MTPayState,
)
from tests.unit.mtpay_worker import mtpay_runtime, mtpay_server
from workers.process import process_batch
from workers.runtime import Runtime

TASK = "task-1"


@pytest.fixture
def server() -> Iterator[tuple[MTPayState, str]]:
    """MTPay's query API stand-in, and its URL."""
    with mtpay_server() as running:
        yield running


@pytest.fixture
def mtpay(server: tuple[MTPayState, str]) -> MTPayState:
    return server[0]


@pytest.fixture
def runtime(
    database_url: str, redis_url: str, server: tuple[MTPayState, str]
) -> Iterator[Runtime]:
    """A worker's runtime with one MTPay account (confirm_by_query) on the stand-in, three
    attempts per callback."""
    with mtpay_runtime(database_url, redis_url, server[1], RetryPolicy(attempts=1),
                       max_attempts=3) as rt:
        yield rt


def _post(rt: Runtime, mtpay: MTPayState, order_no: str) -> int:
    """Store MTPay's signed callback for the order record the stand-in holds; its id."""
    request = wire.callback_request(mtpay.keys, mtpay.orders[order_no], int(time.time() * 1000))
    (callback_id,) = store(rt.engine, [request])
    return callback_id


def _record(rt: Runtime, callback_id: int) -> tuple[str, str | None, int]:
    with rt.sessions() as session:
        cb = session.get_one(Callback, callback_id)
        return cb.state, cb.reason, cb.attempts


def _history(rt: Runtime, order_no: str) -> list[tuple[Any, ...]]:
    with rt.sessions() as session:
        order = find_order(session, "mtpay", "default", order_no)
        assert order is not None
        rows = session.execute(select(OrderEvent.callback_id, OrderEvent.outcome)
                               .where(OrderEvent.order_id == order.id).order_by(OrderEvent.id))
        return [tuple(r) for r in rows]


def _replay(rt: Runtime, callback_id: int) -> None:
    with rt.sessions.begin() as session:
        assert reset_for_replay(session, ids=[callback_id]).reset == [callback_id]


def _balances(rt: Runtime) -> list[dict[str, Any]]:
    with rt.sessions() as session:
        return balances(session)


def test_a_replay_the_provider_no_longer_knows_keeps_its_outcome_at_once(
    runtime: Runtime, mtpay: MTPayState,
) -> None:
    """A callback applied when MTPay confirmed its order, replayed after MTPay forgot the order,
    ends `applied` again (reason `confirmed_before`) on its first attempt, as a replay the
    provider still confirms does, books nothing and adds no
    history entry: it waited as `query:not_found` and ended `rejected: unconfirmed` after its
    attempts, a false record of a callback whose money the ledger holds."""
    order_no = unique("RP")
    mtpay.set(order_no, "SUCCESS")
    callback_id = _post(runtime, mtpay, order_no)
    process_batch(runtime, [callback_id], TASK)
    assert _record(runtime, callback_id) == ("applied", None, 1)
    booked = _balances(runtime)
    del mtpay.orders[order_no]  # the provider purged it
    _replay(runtime, callback_id)
    result = process_batch(runtime, [callback_id], TASK)
    assert _record(runtime, callback_id) == ("applied", "confirmed_before", 1)
    assert result.retry == {}
    assert _history(runtime, order_no) == [(callback_id, "applied")]
    assert _balances(runtime) == booked
    assert mtpay.count(order_no) == 2


def test_only_the_callbacks_that_reached_the_ledger_are_confirmed_before(
    runtime: Runtime, mtpay: MTPayState,
) -> None:
    """In one batch with the replayed callback, a new callback claiming the same order, which
    never reached the ledger itself, keeps waiting for the provider (`query:not_found`), and
    ends `rejected: unconfirmed` on its last attempt: the order's history holding another
    callback's entry confirms nothing about it."""
    order_no = unique("RP")
    mtpay.set(order_no, "SUCCESS")
    applied = _post(runtime, mtpay, order_no)
    process_batch(runtime, [applied], TASK)
    del mtpay.orders[order_no]
    _replay(runtime, applied)
    mtpay.set(order_no, "SUCCESS")
    newcomer = _post(runtime, mtpay, order_no)
    del mtpay.orders[order_no]
    result = process_batch(runtime, [applied, newcomer], TASK)
    assert _record(runtime, applied) == ("applied", "confirmed_before", 1)
    assert _record(runtime, newcomer) == ("processing", "query:not_found", 1)
    assert list(result.retry.values()) == [[newcomer]]
    with runtime.engine.begin() as conn:  # its last attempt is next
        conn.execute(update(Callback).where(Callback.id == newcomer).values(attempts=2))
    process_batch(runtime, [newcomer], TASK)
    assert _record(runtime, newcomer) == ("rejected", "unconfirmed", 3)
    assert _history(runtime, order_no) == [(applied, "applied")]
