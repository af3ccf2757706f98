"""A batch shares one transaction, yet each callback ends in its own state: a poison callback
cannot fail its neighbours (not even one that kills its worker), and a batch processed twice
changes nothing the second time; a transient failure waits out its delay."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

import ledger.booking
import workers.judging
from ledger.apply import Incoming
from ledger.db import make_engine, make_sessionmaker
from ledger.models import Callback, Order
from ledger.replay import reset_for_replay
from payhook.accounts import load_accounts
from payhook.embedded import free_port
from payhook.replay import replay
from payhook.settings import Settings
from providers.base import HttpRequest
from providers.errors import ConfigError
from reconcile.budget import RateBudget, window
from tests.conftest import unique
from tests.harness import Stack, store
from workers.process import BatchResult, process_batch
from workers.runtime import Runtime
from workers.sweeper import sweep

TASK = "task-1"  # the Celery task id an attempt is claimed for


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


def _sound(stack: Stack, runtime: Runtime, count: int) -> list[int]:
    """Store `count` sound callbacks (OPay successes of new orders); their ids."""
    world = stack.world
    return store(runtime.engine, [world.callback("opay", world.fields("opay", unique(),
                                                                     "succeeded", "5.00"))
                                  for _ in range(count)])


def _breaks_on(monkeypatch: pytest.MonkeyPatch, culprit: int) -> None:
    """Judging `culprit` raises an error no retry cures (an adapter bug); the rest as ever."""
    judge = workers.judging.judge

    def breaks_on_the_culprit(rt: Runtime, cb: Callback) -> workers.judging.Verdict:
        if cb.id == culprit:
            raise KeyError("an adapter bug")
        return judge(rt, cb)

    monkeypatch.setattr(workers.judging, "judge", breaks_on_the_culprit)


def _set(runtime: Runtime, callback_id: int, **values: object) -> None:
    """Write these columns of the callback's row directly, as time or a worker would have."""
    with runtime.engine.begin() as conn:
        conn.execute(update(Callback).where(Callback.id == callback_id).values(**values))


@pytest.mark.parametrize(
    ("order_no", "amount", "reason"),
    [
        ("", "5.001", "bad_amount"),
        ("", "100000000000000000000.00", "bad_amount"),
        ("M" * 129, "5.00", "malformed"),
        ("M\x00NUL", "5.00", "malformed"),
    ],
    ids=["finer_than_cents", "beyond_bigint", "order_no_too_long", "order_no_with_nul"],
)
def test_poison_callback_does_not_fail_its_neighbours(
    stack: Stack, runtime: Runtime, order_no: str, amount: str, reason: str
) -> None:
    """A callback the ledger cannot hold (an amount finer than the currency's unit or beyond
    what it can hold, an order number wider than its column or with a character PostgreSQL's
    text refuses) is rejected alone, at once; the rest of its batch applies."""
    world = stack.world
    good = [world.callback("opay", world.fields("opay", unique(), "succeeded", "5.00"))
            for _ in range(4)]
    poison_fields = world.fields("opay", order_no or unique(), "succeeded", "5.00")
    poison = world.callback("opay", {**poison_fields, "amount": amount})
    ids = store(runtime.engine, [good[0], good[1], poison, *good[2:]])
    result = process_batch(runtime, ids, TASK)
    assert result.states == {"applied": 4, "rejected": 1}
    assert result.reasons[f"rejected|{reason}"] == 1
    records = [stack.callback(i) for i in ids]
    assert [r["state"] for r in records] == ["applied", "applied", "rejected", "applied",
                                             "applied"]


@pytest.mark.parametrize("order_no", ["M\x00NUL", "M\ud800"], ids=["nul", "lone_surrogate"])
def test_an_unsigned_claim_with_an_unstorable_order_number_is_rejected_before_any_query(
    stack: Stack, runtime: Runtime, order_no: str
) -> None:
    """Anyone can post an unsigned OPay callback. One whose order number holds a character
    PostgreSQL's text refuses (or UTF-8 cannot encode) is `malformed` at once: before, building
    its query raised, or writing its row did, and its whole batch came back at every sweep."""
    world = stack.world
    good = [world.callback("opay", world.fields("opay", unique(), "succeeded", "5.00"))
            for _ in range(2)]
    body = json.dumps({"data": {"outOrderNo": order_no, "orderNo": "X1", "payNo": "P1",
                                "status": "SUCCESS", "amount": "5.00", "currency": "NGN"}})
    claim = HttpRequest("POST", "/callbacks/opay", {"Content-Type": "application/json",
                                                    "X-Opay-Tranid": "T1"}, body.encode())
    ids = store(runtime.engine, [good[0], claim, good[1]])
    result = process_batch(runtime, ids, TASK)
    assert result.states == {"applied": 2, "rejected": 1}
    assert result.reasons["rejected|malformed"] == 1
    assert [stack.callback(i)["state"] for i in ids] == ["applied", "rejected", "applied"]
    # Nothing was asked of the provider (the session's other callbacks may be, meanwhile).
    assert not [key for key in stack.world.queries if key[1] in (order_no, "X1")]


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
    ids = store(runtime.engine, [world.callback("opay", fields), world.callback("opay", fields)])
    move_money = ledger.booking.move_money

    def fail_for_the_first(session: Session, order: Order, event: Incoming, now: datetime,
                           ) -> list[str]:
        if event.callback_id == ids[0]:
            raise RuntimeError("injected fault after the order was created")
        return move_money(session, order, event, now)

    monkeypatch.setattr(ledger.booking, "move_money", fail_for_the_first)
    result = process_batch(runtime, ids, TASK)
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
    ids = store(runtime.engine, [world.callback("otgpay",
                                         world.fields("otgpay", order_no, "succeeded", "9.00"))])
    assert process_batch(runtime, ids, TASK).states == {"applied": 1}
    assert process_batch(runtime, ids, TASK).states == {}
    order = stack.order("otgpay", order_no)
    assert order is not None
    assert len(order["history"]) == 1
    assert len(order["payments"]) == 1


class WorkerDied(BaseException):
    """Stands for the worker process dying mid-attempt: like SIGKILL, nothing after it runs,
    not even an `except Exception`."""


def _each_alone_until_the_culprit_is_dead(
    runtime: Runtime, ids: list[int], culprit: int, error: type[BaseException]
) -> BatchResult:
    """Send each callback of a split batch again alone, each in its own task, as the task does:
    the neighbours apply at once; the culprit fails with `error` until `max_attempts` (3)
    attempts have started. A worker's death is redelivered under its task's id; a task that
    failed is sent again by the sweeper, as a new task. The result of the attempt after the
    last, which must not judge the culprit again."""
    for callback_id in ids:
        if callback_id != culprit:
            assert process_batch(runtime, [callback_id], f"alone-{callback_id}").states == {
                "applied": 1}
    for attempt in range(1, runtime.settings.max_attempts + 1):
        task = f"alone-{culprit}" if error is WorkerDied else f"swept-{attempt}"
        with pytest.raises(error):
            process_batch(runtime, [culprit], task)
        assert _attempts(runtime, culprit) == attempt
    task = f"alone-{culprit}" if error is WorkerDied else "swept-last"
    return process_batch(runtime, [culprit], task)


def _attempts(runtime: Runtime, callback_id: int) -> int:
    with Session(runtime.engine) as session:
        return session.get_one(Callback, callback_id).attempts


def test_a_callback_that_kills_its_worker_ends_dead_alone(
    stack: Stack, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first death takes its batch with it; redelivered, the batch is split and each
    callback sent alone, with the batch's attempt given back (which one killed it is not
    known), so its neighbours apply. Alone, the killer is attempted `max_attempts` (3) times,
    then ends `dead` with reason `worker_lost` without being judged again."""
    world = stack.world
    requests = [world.callback("opay", world.fields("opay", unique(), "succeeded", "5.00"))
                for _ in range(5)]
    ids = store(runtime.engine, requests)
    killer = ids[2]
    judged: list[int] = []
    judge = workers.judging.judge

    def dies_on_the_killer(rt: Runtime, cb: Callback) -> workers.judging.Verdict:
        judged.append(cb.id)
        if cb.id == killer:
            raise WorkerDied
        return judge(rt, cb)

    monkeypatch.setattr(workers.judging, "judge", dies_on_the_killer)
    with pytest.raises(WorkerDied):
        process_batch(runtime, ids, TASK)
    assert {stack.callback(i)["attempts"] for i in ids} == {1}

    redelivered = process_batch(runtime, ids, TASK)
    assert redelivered.split == ids
    assert redelivered.states == {}
    assert judged == ids[:3]  # the redelivery judged nothing

    final = _each_alone_until_the_culprit_is_dead(runtime, ids, killer, WorkerDied)
    assert final.states == {"dead": 1}
    assert final.reasons == {"dead|worker_lost": 1}
    assert judged.count(killer) == 1 + 3

    records = {i: stack.callback(i) for i in ids}
    assert (records[killer]["state"], records[killer]["reason"]) == ("dead", "worker_lost")
    assert records[killer]["attempts"] == 3
    assert [records[i]["state"] for i in ids if i != killer] == ["applied"] * 4
    assert [records[i]["attempts"] for i in ids if i != killer] == [1] * 4


def test_an_unexpected_error_is_taken_for_a_death_and_ends_the_culprit_dead_alone(
    stack: Stack, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error no retry can cure (a bug, an input nothing foresaw) used to release the
    attempt and fail the task: the sweeper then sent the same batch again, for ever, and its
    neighbours never finished. Now the batch is split at once, the neighbours apply, and the
    culprit, tried alone, ends `dead` after `max_attempts` (3)."""
    ids = _sound(stack, runtime, 4)
    culprit = ids[1]
    _breaks_on(monkeypatch, culprit)
    first = process_batch(runtime, ids, TASK)
    assert (first.split, first.states) == (ids, {})
    assert [_attempts(runtime, i) for i in ids] == [0] * 4  # given back: no one's fault yet
    final = _each_alone_until_the_culprit_is_dead(runtime, ids, culprit, KeyError)
    assert final.reasons == {"dead|worker_lost": 1}
    records = {i: stack.callback(i) for i in ids}
    assert (records[culprit]["state"], records[culprit]["attempts"]) == ("dead", 3)
    assert [records[i]["state"] for i in ids if i != culprit] == ["applied"] * 3


def test_a_copy_of_a_running_attempt_leaves_the_callback_to_it(
    stack: Stack, runtime: Runtime
) -> None:
    """A second task for a callback whose attempt runs in another task (a late retry the
    sweeper also sent, a split of a batch still running) used to take that attempt for a death:
    on its last attempt the callback ended `dead` while the first task was applying it, or
    else a second attempt ran beside the first. Now the copy leaves it to the running task and
    processes the rest; a claim past the task time limit is over, and counts as a death."""
    ids = _sound(stack, runtime, 2)
    running = ids[0]
    now = datetime.now(UTC)
    _set(runtime, running, state="processing", attempts=3, claimed_at=now,
         claimed_by="the-running-task")

    copy = process_batch(runtime, ids, "a-copy")
    assert (copy.split, copy.states) == ([], {"applied": 1})
    record = stack.callback(running)
    assert (record["state"], record["attempts"]) == ("processing", 3)
    assert process_batch(runtime, [running], "another-copy").states == {}
    assert _attempts(runtime, running) == 3

    # The running task itself, redelivered after its worker died, knows its claim is over.
    assert process_batch(runtime, [running], "the-running-task").reasons == {
        "dead|worker_lost": 1}

    [stale] = _sound(stack, runtime, 1)
    limit = timedelta(seconds=runtime.settings.task_time_limit_s)
    _set(runtime, stale, state="processing", attempts=3, claimed_at=now - limit - limit / 10,
         claimed_by="a-task-long-gone")
    assert process_batch(runtime, [stale], "the-sweepers-copy").reasons == {
        "dead|worker_lost": 1}


def test_a_batch_taken_for_a_death_does_not_cost_its_neighbours_their_last_attempt(
    stack: Stack, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose attempt fails with an unforeseen error is split; the attempt was no one
    callback's fault, so each gets it back. Before, a neighbour on its last attempt, sent
    alone, found the attempt unfinished and ended `dead` though it was sound."""
    ids = _sound(stack, runtime, 2)
    culprit, neighbour = ids
    _set(runtime, neighbour, state="processing", attempts=2)
    _breaks_on(monkeypatch, culprit)
    assert process_batch(runtime, ids, TASK).split == ids
    assert (_attempts(runtime, culprit), _attempts(runtime, neighbour)) == (0, 2)
    assert process_batch(runtime, [neighbour], "alone").states == {"applied": 1}
    assert _attempts(runtime, neighbour) == 3


def test_a_query_that_breaks_fails_its_own_callback_not_the_batch(
    stack: Stack, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A confirming query that raises something other than a query error (an adapter bug) is
    that callback's transient failure: it waits for its retry, and its batch applies."""
    world = stack.world
    claims = []
    for _ in range(2):
        fields = world.fields("mtpay", unique(), "succeeded", "5.00")
        world.publish("mtpay", fields)  # what the provider's query answers
        claims.append(world.callback("mtpay", fields))
    signed = world.callback("otgpay", world.fields("otgpay", unique(), "succeeded", "5.00"))
    ids = store(runtime.engine, [claims[0], signed, claims[1]])
    provider = runtime.accounts.get("mtpay", "default")
    assert provider is not None
    query = type(provider.provider).query
    calls: list[str] = []

    async def breaks_once(self: object, *args: object) -> object:
        calls.append("query")
        if len(calls) == 1:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return await query(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(type(provider.provider), "query", breaks_once)
    result = process_batch(runtime, ids, TASK)
    assert result.split == []
    assert result.states == {"applied": 2, "processing": 1}
    assert result.reasons["processing|query:UnicodeEncodeError"] == 1
    assert [stack.callback(i)["state"] for i in ids].count("applied") == 2


def test_an_attempt_that_fails_with_an_error_is_not_taken_for_a_dead_worker(
    stack: Stack, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error the task sees (the database dropping mid-attempt, say) ends the attempt; the
    task's retry then processes the batch whole, not split into single tasks."""
    ids = _sound(stack, runtime, 3)
    judge = workers.judging.judge

    def fails_once(rt: Runtime, cb: Callback) -> workers.judging.Verdict:
        monkeypatch.setattr(workers.judging, "judge", judge)
        raise OperationalError("SELECT 1", {}, Exception("connection lost"))

    monkeypatch.setattr(workers.judging, "judge", fails_once)
    with pytest.raises(OperationalError):
        process_batch(runtime, ids, TASK)
    retried = process_batch(runtime, ids, TASK)
    assert retried.split == []
    assert retried.states == {"applied": 3}
    assert [stack.callback(i)["attempts"] for i in ids] == [2, 2, 2]


def test_a_callback_waiting_out_its_retry_is_not_swept_until_overdue(
    stack: Stack, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transient failure schedules the next attempt after its delay (15 s at first); the
    sweeper must not start a second chain of attempts meanwhile, even for a callback received
    long ago, but does take it once `sweep_after_s` has passed beyond the retry's due time."""
    [callback_id] = _sound(stack, runtime, 1)

    def transient(*_: object) -> list[str]:
        raise RuntimeError("injected transient fault")

    monkeypatch.setattr(ledger.booking, "move_money", transient)
    result = process_batch(runtime, [callback_id], TASK)
    assert result.retry == {15: [callback_id]}
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    _set(runtime, callback_id, received_at=long_ago)
    swept: list[int] = []
    sweep(runtime, swept.extend)
    assert callback_id not in swept
    _set(runtime, callback_id, enqueued_at=long_ago)
    sweep(runtime, swept.extend)
    assert callback_id in swept


def test_a_callback_with_an_attempt_running_is_not_swept_until_past_the_time_limit(
    stack: Stack, runtime: Runtime
) -> None:
    """An attempt that takes longer than `sweep_after_s` (slow provider queries) is still
    running: a copy sent beside it would only find it running and leave it alone. The sweeper
    waits out the task time limit, unless the attempt is marked over."""
    [callback_id] = _sound(stack, runtime, 1)
    now = datetime.now(UTC)
    long_ago = now - timedelta(hours=1)
    limit = timedelta(seconds=runtime.settings.task_time_limit_s)
    swept: list[int] = []
    for claimed_at, claimed_by, expected in (
        (now, "another-task", False),
        (now - limit + timedelta(seconds=30), "another-task", False),
        (now - limit - timedelta(seconds=30), "another-task", True),
        (now, None, True),  # the attempt is over (it failed): no need to wait for it
    ):
        _set(runtime, callback_id, received_at=long_ago, enqueued_at=None, claimed_at=claimed_at,
             claimed_by=claimed_by, attempts=1)
        swept.clear()
        sweep(runtime, swept.extend)
        assert (callback_id in swept) is expected, claimed_at


def test_a_callback_that_has_not_ended_is_not_replayed(stack: Stack, runtime: Runtime) -> None:
    """A replay of a callback still `processing` would restart its retry budget and clear the
    claim of the attempt running it: it is refused (409) and the callback left as it was. Once
    it has ended it is replayed, counted as enqueued, so the sweeper does not send it again."""
    [callback_id] = _sound(stack, runtime, 1)
    now = datetime.now(UTC)
    long_ago = now - timedelta(hours=1)
    _set(runtime, callback_id, state="processing", attempts=2, claimed_at=now, enqueued_at=now)

    def row() -> tuple[str, int, bool]:
        with Session(runtime.engine) as session:
            cb = session.get_one(Callback, callback_id)
            return cb.state, cb.attempts, cb.claimed_at is not None

    status, body = stack.api("POST", f"/api/callbacks/{callback_id}/replay")
    assert (status, body) == (409, {"error": "callback has not ended yet; it is still being "
                                             "processed"})
    assert row() == ("processing", 2, True)
    with (Session(runtime.engine) as session, session.begin(),
          pytest.raises(ValueError, match="not ended")):
        reset_for_replay(session, state="processing")

    _set(runtime, callback_id, claimed_at=None)  # the attempt ends without a verdict
    assert process_batch(runtime, [callback_id], TASK).states == {"applied": 1}
    with Session(runtime.engine) as session, session.begin():
        replay = reset_for_replay(session, ids=[callback_id, callback_id + 10**9])
    assert (replay.reset, replay.in_flight) == ([callback_id], [])
    assert row() == ("received", 0, False)
    # Received long ago: overdue, unless just enqueued.
    _set(runtime, callback_id, received_at=long_ago)
    swept: list[int] = []
    sweep(runtime, swept.extend)
    assert callback_id not in swept


def _spend_query_budget(runtime: Runtime, provider: str, seconds: int) -> list[str]:
    """Spend `provider`'s default-account query budget for the next `seconds`, as other
    processes would have; the Redis keys written."""
    account = runtime.accounts.get(provider, "default")
    assert account is not None
    budget = RateBudget(runtime.redis, runtime.recon_prefix)
    length, allowed = window(account.config.query_rate_per_s)
    first = int(time.time() // length)
    keys = [budget.key(account.key, slot) for slot in range(first, first + seconds // length + 1)]
    for key in keys:
        runtime.redis.set(key, allowed, ex=seconds + 5)
    return keys


def test_a_flood_of_claims_is_held_to_the_accounts_query_budget(
    stack: Stack, runtime: Runtime
) -> None:
    """Plain OPay callbacks are unsigned, so anybody can send them, and each asks OPay about
    its order. With the account's query budget spent (by other workers or the reconciliation
    pass), they wait `confirm_wait_s`, ask nothing, and are deferred without counting an
    attempt; once the budget allows, they are asked about and apply like any other."""
    world = stack.world
    orders = [unique() for _ in range(4)]
    ids = store(runtime.engine, [
        world.callback("opay", world.fields("opay", order_no, "succeeded", "5.00"), plain=True)
        for order_no in orders])
    runtime.settings = runtime.settings.model_copy(update={"confirm_wait_s": 0.3})
    keys = _spend_query_budget(runtime, "opay", 60)
    try:
        deferred = process_batch(runtime, ids, TASK)
    finally:
        runtime.redis.delete(*keys)
    assert deferred.reasons == {"processing|query:deferred": 4}
    assert sum(world.queries[("opay", order_no)] for order_no in orders) == 0
    assert {(stack.callback(i)["state"], stack.callback(i)["attempts"]) for i in ids} == {
        ("processing", 0)}

    for order_no in orders:  # genuine after all: the provider knows these orders
        world.publish("opay", world.fields("opay", order_no, "succeeded", "5.00"))
    # The default wait again: 0.3 s is less than this process's pace needs to send four.
    runtime.settings = runtime.settings.model_copy(update={"confirm_wait_s": 2.0})
    asked = process_batch(runtime, ids, TASK)
    assert asked.states == {"applied": 4}
    assert [world.queries[("opay", order_no)] for order_no in orders] == [1, 1, 1, 1]
    assert {stack.callback(i)["attempts"] for i in ids} == {1}


def test_callbacks_claiming_one_order_share_one_query(stack: Stack, runtime: Runtime) -> None:
    """Several callbacks of a batch claiming the same order (a provider repeating itself, or
    a flood naming one order) cost one status query, whose answer judges each of them."""
    world = stack.world
    order_no = unique()
    fields = world.fields("opay", order_no, "succeeded", "5.00")
    world.publish("opay", fields)
    ids = store(runtime.engine, [world.callback("opay", fields, plain=True)] * 3)
    result = process_batch(runtime, ids, TASK)
    assert result.states == {"applied": 1, "duplicate": 2}
    assert world.queries[("opay", order_no)] == 1


def test_without_the_query_budget_claims_are_deferred_not_failed(
    stack: Stack, runtime: Runtime
) -> None:
    """With Redis, which holds the shared query budget, out of reach, a claim is neither asked
    about past the budget nor failed: it is deferred, and its attempt does not count."""
    world = stack.world
    order_no = unique()
    [callback_id] = store(runtime.engine, [world.callback(
        "opay", world.fields("opay", order_no, "succeeded", "5.00"), plain=True)])
    runtime.redis.close()
    runtime.redis = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    result = process_batch(runtime, [callback_id], TASK)
    assert result.reasons == {"processing|query:deferred": 1}
    assert world.queries[("opay", order_no)] == 0
    assert stack.callback(callback_id)["attempts"] == 0


def test_a_replay_that_cannot_publish_changes_nothing(stack: Stack, runtime: Runtime) -> None:
    """`payhook replay` without a broker to publish to refuses before it resets anything: the
    callback keeps its final state and its attempts."""
    [callback_id] = _sound(stack, runtime, 1)
    assert process_batch(runtime, [callback_id], TASK).states == {"applied": 1}
    unpublishable = runtime.settings.model_copy(update={"redis_url": None})
    with pytest.raises(ConfigError, match="PAYHOOK_REDIS_URL"):
        replay(unpublishable, ids=[callback_id], state=None)
    record = stack.callback(callback_id)
    assert (record["state"], record["attempts"]) == ("applied", 1)


def test_a_callback_for_an_account_this_worker_does_not_know_is_retried_not_rejected(
    stack: Stack, runtime: Runtime
) -> None:
    """A receiver acknowledged it, so some configuration has the account (a rolling deploy
    reaches this worker later): retried, then `dead` and replayable, never `rejected`."""
    [callback_id] = _sound(stack, runtime, 1)
    _set(runtime, callback_id, account="eu")
    first = process_batch(runtime, [callback_id], TASK)
    assert first.reasons == {"processing|account_unknown": 1}
    assert sum(len(ids) for ids in first.retry.values()) == 1
    for _ in range(2):
        last = process_batch(runtime, [callback_id], TASK)
    assert last.reasons == {"dead|account_unknown": 1}
    record = stack.callback(callback_id)
    assert (record["state"], record["reason"], record["attempts"]) == ("dead", "account_unknown", 3)
