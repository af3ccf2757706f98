"""Polling claimed orders: ask each provider (concurrently, within the account's budget and
breaker), then apply what it says through the ledger's rules (`source: poll`), one savepoint
per order, and schedule each still-pending order's next query by its backoff.

An answer the ledger cannot take (about another order, an amount the currency cannot hold, a
field wider than its column) changes nothing and flags the order for review; the order keeps
its backoff, so it is not asked again at every lease as if the pass had failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import redis
import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.apply import apply_event, flag_order
from ledger.fields import EventError
from ledger.models import Order
from ledger.money import AmountError
from ledger.status import Kind, Outcome, Status
from payhook.accounts import Account
from providers.base import OrderKind, OrderRef, ProviderEvent
from providers.errors import QueryAuth, QueryError, QueryNotFound, QueryRefused, QueryTransient
from reconcile.breaker import Breaker, BreakerState
from reconcile.budget import REFUSED, BudgetCharge, RateBudget
from reconcile.context import Deadline, OutOfTime, PassContext
from reconcile.due import DueOrder
from reconcile.outage import RedisCalls, RedisDown

log = structlog.get_logger(__name__)


@dataclass
class Answer:
    """What the provider said about one order: events, or the kind of error (and its code)."""

    order: DueOrder
    events: list[ProviderEvent] = field(default_factory=list)
    error: str | None = None  # not_found | transient | auth | permanent | skipped
    code: str = ""


@dataclass
class Polled:
    """What applying one answer did, for the report."""

    order: DueOrder
    error: str | None
    code: str
    status_before: str
    status_after: str
    outcomes: list[str]
    flags: list[str]
    seen: list[str] = field(default_factory=list)  # the provider statuses it reported
    amount_seen: Decimal | None = None
    amount_mismatch: bool = False
    currency_seen: str | None = None  # set when it is not the order's currency
    # A static VA's repayments this answer told of first, each (event id, status, provider
    # status): the VA stays pending, so they are what polling resolved.
    repayments: list[tuple[str, str, str]] = field(default_factory=list)
    unresolved: bool = False


async def query_all(
    ctx: PassContext, work: Sequence[tuple[Account, DueOrder]], breaker: Breaker,
    budget: RateBudget, calls: RedisCalls | None = None, deadline: Deadline | None = None,
) -> list[Answer]:
    """Query every order, at most `concurrency` at once; the answers in input order.

    One order's failure is its own answer, never the pass's: a Redis error (budget, breaker)
    is that order's transient failure, and every query is awaited, so none is left running on
    the loop when the pass goes on, or ends. Once Redis is found out of reach, though, the
    orders not yet asked fail so at once (`calls`: the pass's, whose earlier calls may have found
    it so already; a round of its own otherwise), not each after the client's retries; the next
    pass tries Redis again. The pass out of time (`OutOfTime`, raised in one of its queries, or
    `deadline` passed when one is about to be sent), no query is sent any more, and it is raised
    once those under way are over."""
    round_ = _Round(ctx, asyncio.Semaphore(ctx.config.concurrency), calls or RedisCalls(),
                    breaker, budget, deadline or Deadline())
    cut = 0

    async def one(account: Account, order: DueOrder) -> Answer:
        nonlocal cut
        try:
            return await _gated(round_, account, order)
        except OutOfTime as exc:
            round_.out_of_time = exc
            raise
        except RedisDown as exc:  # one line for them all, below
            cut += 1
            return Answer(order, error="transient", code=f"redis:{exc.cause}")
        except redis.RedisError as exc:
            # Not asked (or its answer is kept): never counted against the provider's breaker.
            log.warning("poll_redis_failed", order_id=order.id, account=account.key,
                        error=type(exc).__name__)
            return Answer(order, error="transient", code=f"redis:{type(exc).__name__}")

    results = await asyncio.gather(*(one(a, o) for a, o in work), return_exceptions=True)
    if round_.out_of_time is not None:
        raise round_.out_of_time
    if round_.calls.down is not None:
        log.warning("poll_redis_down", error=round_.calls.down, orders_cut=cut)
    answers: list[Answer] = []
    for (account, order), result in zip(work, results, strict=True):
        if isinstance(result, BaseException):  # a bug of ours: this order only, asked again
            log.error("poll_order_failed", order_id=order.id, account=account.key,
                      error=type(result).__name__)
            result = Answer(order, error="transient", code=f"error:{type(result).__name__}")
        answers.append(result)
    return answers


@dataclass
class _Round:
    """What the queries of one round share: the pass, the slots, the Redis calls and through
    them the accounts' breakers and query budgets."""

    ctx: PassContext
    gate: asyncio.Semaphore
    calls: RedisCalls
    breaker: Breaker
    budget: RateBudget
    deadline: Deadline
    out_of_time: OutOfTime | None = None  # raised in one query: the others are not sent


async def _gated(round_: _Round, account: Account, order: DueOrder) -> Answer:
    """Query one order if its account's breaker and budget let it, within a `gate` slot.

    The budget's unit is taken in the slot, right before the query goes out: a unit taken
    while waiting for a slot was spent later, with the other waiters', in a burst over the rate
    every process shares. Nothing is waited for in a slot, so an account at its rate does not
    keep slots from the others: this process's own pace (the account's token bucket, whose wait
    had come between the unit and the request) is waited for before taking one, and a spent
    window gives the slot back until the window's end. Per-account gates would bound neither
    the pass's concurrency nor the time a unit is held."""
    key, rate = account.key, account.config.query_rate_per_s
    calls, breaker = round_.calls, round_.breaker
    if not await calls.run(breaker.allow, key):
        return Answer(order, error="skipped", code="breaker_open")
    pace = round_.ctx.http.bucket(key, rate)
    while True:
        await pace.acquire()
        async with round_.gate:
            if round_.out_of_time is not None:
                return Answer(order, error="skipped", code="time_limit")
            round_.deadline.check()  # before its budget unit is taken
            if await calls.run(breaker.state, key) is BreakerState.OPEN:
                return Answer(order, error="skipped", code="breaker_open")  # while it waited
            wait = await calls.run(round_.budget.try_take, key, rate)
            if wait == 0.0:
                return await _asked(round_, account, order)
        await asyncio.sleep(wait)  # the window is spent: the slot is free until it ends


async def _asked(round_: _Round, account: Account, order: DueOrder) -> Answer:
    """The provider's answer about `order`, recorded on the breaker (in the caller's slot, so
    the next query sees a breaker this one opened)."""
    answer = await _query(round_, account, order)
    try:
        await _record(round_, account.key, answer)
    except redis.RedisError as exc:  # the provider did answer: its answer is kept
        log.warning("breaker_record_failed", account=account.key, error=type(exc).__name__)
    return answer


async def _record(round_: _Round, key: str, answer: Answer) -> None:
    calls, breaker = round_.calls, round_.breaker
    if answer.error == "transient":
        if await calls.run(breaker.record_failure, key):
            log.warning("breaker_opened", account=key)
    elif answer.error is None or answer.error == "not_found":
        await calls.run(breaker.record_success, key)


async def _query(round_: _Round, account: Account, order: DueOrder) -> Answer:
    ref = OrderRef(order.merchant_order_no, order.provider_order_no, OrderKind(order.kind))
    key, rate = account.key, account.config.query_rate_per_s
    transport = round_.ctx.http.for_account(key, rate, _retry_charge(round_, key, rate),
                                            paced=True)
    now_ms = int(round_.ctx.now().timestamp() * 1000)
    try:
        events = await account.provider.query(transport, account.config, ref, now_ms)
    except QueryNotFound as exc:
        return Answer(order, error="not_found", code=exc.safe_code)
    except QueryRefused:
        return Answer(order, error="transient", code=REFUSED)
    except QueryTransient as exc:
        return Answer(order, error="transient", code=exc.safe_code)
    except QueryAuth as exc:
        return Answer(order, error="auth", code=exc.safe_code)
    except QueryError as exc:  # QueryPermanent: the provider's code says why, for the report
        log.warning("poll_query_failed", order_id=order.id, error=type(exc).__name__,
                    code=exc.safe_code)
        return Answer(order, error="permanent", code=exc.safe_code)
    except (redis.RedisError, OutOfTime):  # a retry's charge (Redis's failure), or the pass's
        raise
    except Exception as exc:  # an adapter bug, this order only: it has no code but its class
        log.warning("poll_query_failed", order_id=order.id, error=type(exc).__name__)
        return Answer(order, error="permanent", code=type(exc).__name__)
    if not events and order.kind != Kind.STATIC_VA.value:
        # MonetaPay answers an unknown order with an empty list; an open VA may have none yet.
        return Answer(order, error="not_found", code="empty_reply")
    return Answer(order, events=events)


def _retry_charge(round_: _Round, key: str, rate: float) -> BudgetCharge:
    """Charges a query's retries to its account's budget. Waited for in the query's slot, as its
    backoff is, so each retry waits for its turn and its unit no longer than the transport's
    longest backoff (`backoff_max_s`): a spent account (a low rate's window is seconds long, a
    process's bucket many queries deep) would hold the slot, and the pass, for it. Refused,
    the query fails transient (`query:budget`) and its order is asked again later."""
    budget, longest = round_.budget, round_.ctx.http.retry.backoff_max_s
    return BudgetCharge(budget, key, rate, lambda: budget.now() + longest, round_.calls.run)


def apply_answer(
    session: Session, account: Account, answer: Answer, schedule: tuple[int, ...],
    give_up_after_s: int, now: datetime,
) -> Polled:
    """Apply one answer and reschedule its order; the caller owns the (nested) transaction."""
    due = answer.order
    order = session.execute(
        select(Order).where(Order.id == due.id).with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    polled = Polled(due, answer.error, answer.code, order.status, order.status, [], [])
    for event in answer.events:
        # apply_event locks and updates this same identity-mapped Order object.
        _apply_one(session, account, order, event, polled, now)
    polled.status_after = order.status
    if order.status != Status.PENDING.value:
        return polled
    # A skipped or busy query is not an attempt: it is retried when the claim's lease ends,
    # but not past the give-up age, whatever the provider keeps answering.
    if answer.error not in ("skipped", "transient"):
        order.poll_attempts += 1
        steps = schedule or (86400,)
        order.next_poll_at = now + timedelta(
            seconds=steps[min(order.poll_attempts, len(steps)) - 1])
        order.updated_at = now
    too_old = now - order.created_at >= timedelta(seconds=give_up_after_s)
    if too_old and order.kind != Kind.STATIC_VA.value:
        # An open static VA stays pending by design; anything else this old a person must see.
        order.next_poll_at = None
        flag_order(order, ["unresolved"])
        polled.unresolved = True
        order.updated_at = now
    return polled


def _apply_one(
    session: Session, account: Account, order: Order, event: ProviderEvent, polled: Polled,
    now: datetime,
) -> None:
    if event.merchant_order_no != order.merchant_order_no:
        # The provider answered about another order: never let it touch this one.
        _unusable(order, polled, "wrong_order_in_reply", f"answered {event.merchant_order_no}")
        return
    incoming = account.incoming(event, "poll")
    try:
        with session.begin_nested():
            applied = apply_event(session, incoming, now)
    except AmountError as exc:
        _unusable(order, polled, "bad_amount_in_reply", str(exc))
        return
    except EventError as exc:
        _unusable(order, polled, "malformed_reply", str(exc))
        return
    polled.outcomes.append(applied.outcome.value)
    polled.seen.append(event.provider_status)
    polled.flags.extend(f for f in applied.flags if f not in polled.flags)
    if event.amount is not None:
        polled.amount_seen = event.amount
    # The ledger's own judgement, so the report never contradicts the order's review flags:
    # a provider's partial payment or overpayment is flagged as such, not as a mismatch.
    polled.amount_mismatch = polled.amount_mismatch or "amount_mismatch" in applied.flags
    if "currency_mismatch" in applied.flags:
        polled.currency_seen = (incoming.currency or "").upper()
    resolves = applied.outcome is Outcome.APPLIED and incoming.status is not Status.PENDING
    if resolves and order.kind == Kind.STATIC_VA.value:
        polled.repayments.append((event.event_id, incoming.status.value, event.provider_status))
    if applied.outcome is Outcome.CONFLICT and "conflicting_status" not in polled.flags:
        polled.flags.append("conflicting_status")


def _unusable(order: Order, polled: Polled, reason: str, detail: str) -> None:
    """Flag `order` for an answer it could not take (once per reason)."""
    log.warning("poll_reply_unusable", order_id=order.id, reason=reason, detail=detail[:200])
    if reason not in polled.flags:
        polled.flags.append(reason)
    flag_order(order, [reason])
