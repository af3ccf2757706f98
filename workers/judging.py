"""Judging one stored callback before anything is written: decode and verify it, and for a
callback that only claims (confirm-by-query), ask the provider what to believe instead.

Runs outside any transaction: CPU and provider queries, and one read of the ledger for the
callbacks of a batch whose order the provider does not know.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
import structlog

from ledger.apply import OrderKey
from ledger.fields import EventError, check_fields
from ledger.history import reached_ledger
from ledger.models import Callback
from payhook.accounts import Account
from providers.base import Headers, OrderRef, ProviderEvent, RawCallback, Trust
from providers.errors import QueryError, QueryNotFound, QueryRefused, Rejected
from providers.http import admitted
from reconcile.budget import REFUSED, BudgetCharge, RateBudget
from reconcile.outage import RedisCalls, RedisDown
from workers.runtime import Runtime

log = structlog.get_logger(__name__)
# The reason of a callback whose confirming query its account's budget postponed.
DEFERRED = "query:deferred"
# The reason of a replayed callback whose order the provider has forgotten since it confirmed it
# to this callback: the ledger holds the callback's event already, and it keeps its outcome.
CONFIRMED_BEFORE = "confirmed_before"


@dataclass
class Verdict:
    """What judging one callback decided, before anything is written."""

    callback_id: int
    attempts: int
    account: Account | None = None
    events: list[ProviderEvent] = field(default_factory=list)
    claimed: ProviderEvent | None = None
    rejected: str | None = None
    transient: str | None = None
    deferred: bool = False  # never asked the provider: this attempt does not count
    unknown: bool = False  # the provider's status API does not know the claimed order
    # ... but did when this callback reached the ledger before: the outcome it had there.
    confirmed_before: str | None = None

    @property
    def counted(self) -> int:
        """The attempts that count against `max_attempts`, this one included unless deferred."""
        return self.attempts - 1 if self.deferred else self.attempts

    def order_key(self, event: ProviderEvent) -> OrderKey:
        """The ledger's key of the order `event` (one of this callback's) is about."""
        assert self.account is not None
        return (self.account.provider.name, self.account.name, event.merchant_order_no)


def judge(rt: Runtime, cb: Callback) -> Verdict:
    """Decode and verify one stored callback: its events, the event it only claims, or why
    it is rejected."""
    verdict = Verdict(cb.id, cb.attempts)
    account = rt.accounts.get(cb.provider, cb.account)
    if account is None:
        # A receiver acknowledged it, so some configuration has the account: during a rolling
        # deploy this worker's may not yet. Retried, not rejected; `dead` (and replayable) if
        # the account stays unknown through every attempt.
        log.warning("callback_account_unknown", callback_id=cb.id, provider=cb.provider,
                    account=cb.account)
        verdict.transient = "account_unknown"
        return verdict
    verdict.account = account
    raw = RawCallback(
        body=cb.body,
        headers=Headers([(k, v) for k, v in json.loads(cb.headers)]),
        received_at=cb.received_at,
        remote=cb.remote_addr,
    )
    try:
        event = account.provider.parse_callback(raw, account.config)
        check_fields(event)  # before a query is built from them or a row written with them
    except Rejected as exc:
        verdict.rejected = exc.reason
        return verdict
    except EventError as exc:
        log.warning("callback_malformed", callback_id=cb.id, error=str(exc))
        verdict.rejected = "malformed"
        return verdict
    except Exception as exc:  # an adapter bug is a rejection to look at, never a crash loop
        log.exception("adapter_error", callback_id=cb.id)
        verdict.rejected = f"adapter_error:{type(exc).__name__}"[:64]
        return verdict
    if event.trust is Trust.CONFIRM_BY_QUERY or account.trust is Trust.CONFIRM_BY_QUERY:
        verdict.claimed = event  # a hint only: the provider's own API decides what is applied
    else:
        verdict.events = [event]
    return verdict


def confirm(rt: Runtime, verdicts: list[Verdict]) -> None:
    """Ask the providers about every claimed event, concurrently: one query per order however
    many callbacks of the batch claim it, each within its account's query budget.

    The budget (`query_rate_per_s`) is shared with reconciliation by every process, so callbacks
    to confirm (unsigned ones, which anybody can send) cannot drive the queries past the rate the
    provider allows. A query not granted within `confirm_wait_s` is deferred: its callback waits
    for a later attempt, and this one does not count. So is every query once a call of the batch
    has found the budget's Redis out of reach: the rest are cut at once (`RedisCalls`), and the
    batch logs one line for them.
    """
    if not verdicts:
        return
    asked: dict[tuple[str, OrderRef], tuple[Account, list[Verdict]]] = {}
    for v in verdicts:
        assert v.claimed is not None
        assert v.account is not None
        ref = OrderRef(v.claimed.merchant_order_no, v.claimed.provider_order_no)
        if v.claimed.kind is not None:
            ref = OrderRef(ref.merchant_order_no, ref.provider_order_no, v.claimed.kind)
        asked.setdefault((v.account.key, ref), (v.account, []))[1].append(v)
    batch = _Batch(RateBudget(rt.redis, rt.recon_prefix),
                   time.time() + rt.settings.confirm_wait_limit_s)

    async def all_of() -> list[list[ProviderEvent] | str]:
        return list(await asyncio.gather(
            *(_ask(rt, batch, account, ref) for (_, ref), (account, _) in asked.items())
        ))

    deferred: dict[str, int] = {}
    for ((key, _), (_, group)), reply in zip(asked.items(), rt.run(all_of()), strict=True):
        if reply == DEFERRED:
            deferred[key] = deferred.get(key, 0) + len(group)
        for v in group:
            _settle(rt, v, reply)
    _not_found(rt, [v for v in verdicts if v.unknown])
    if batch.calls.down is not None:  # one line for the batch, not one per query
        log.warning("confirm_redis_down", error=batch.calls.down, deferred=batch.unreached,
                    retries_failed=batch.retries_unreached)
    if deferred:
        log.warning("confirm_deferred", reason="query_budget", by_account=deferred)


@dataclass
class _Batch:
    """What the confirming queries of one batch share: the budget, the deadline of any wait for
    it, and the Redis calls, cut short once one finds Redis out of reach (each would otherwise
    pay the client's retries, seconds, and a batch holds its worker until the last is done)."""

    budget: RateBudget
    until: float  # on the budget's clock
    calls: RedisCalls = field(default_factory=RedisCalls)
    unreached: int = 0  # queries deferred because Redis was out of reach
    retries_unreached: int = 0  # queries failed charging a retry, for the same reason


async def _granted(rt: Runtime, batch: _Batch, charge: BudgetCharge) -> bool:
    """Whether a query may go out by the batch's deadline: its turn in this process's pace and
    its unit of the shared budget (`admitted`). False when either is not to be had by then, or
    Redis cannot grant the unit."""
    if batch.calls.down is not None:
        batch.unreached += 1
        return False
    try:
        return await admitted(rt.http.bucket(charge.key, charge.rate), charge)
    except (redis.ConnectionError, redis.TimeoutError):
        batch.unreached += 1  # told once for the batch, by `confirm`
    except redis.RedisError as exc:  # about one key (a wrong type): cuts nothing
        log.warning("query_budget_unavailable", account=charge.key, error=type(exc).__name__)
    # No budget to be had is no grant: deferring counts no attempt, so a Redis outage cannot
    # make genuine callbacks `dead`, nor let a flood past the provider's rate.
    return False


async def _ask(
    rt: Runtime, batch: _Batch, account: Account, ref: OrderRef
) -> list[ProviderEvent] | str:
    """The provider's events about `ref` ([] when it does not know the order), or the
    transient reason there are none yet (`DEFERRED` when the budget granted no query,
    `REFUSED` when it granted no retry by the batch's deadline)."""
    key, rate = account.key, account.config.query_rate_per_s
    # Every attempt by the batch's deadline: a retry with no turn or unit by then is not sent.
    charge = BudgetCharge(batch.budget, key, rate, lambda: batch.until, batch.calls.run)
    if not await _granted(rt, batch, charge):
        return DEFERRED
    transport = rt.http.for_account(key, rate, charge, paced=True)
    try:
        return await account.provider.query(
            transport, account.config, ref, int(datetime.now(UTC).timestamp() * 1000)
        )
    except QueryNotFound:
        return []
    except QueryRefused:  # the budget ended it, not the provider: told as a poll tells it
        return REFUSED
    except QueryError as exc:
        # The code is the provider's text: only printable ASCII of it reaches the reason column
        # (a NUL in it would fail the batch's shared write, and so every neighbour's).
        return f"query:{type(exc).__name__}:{exc.safe_code}"[:64]
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # A retry's charge, after the provider was asked: the attempt counts, but it is Redis
        # that failed, not the adapter (told once for the batch, by `confirm`).
        batch.retries_unreached += 1
        cause = exc.cause if isinstance(exc, RedisDown) else type(exc).__name__
        return f"query:redis:{cause}"[:64]
    except redis.RedisError as exc:
        log.warning("query_budget_unavailable", account=account.key,
                    order=ref.merchant_order_no, error=type(exc).__name__, charging="retry")
        return f"query:redis:{type(exc).__name__}"[:64]
    except Exception as exc:  # an adapter bug: these callbacks' attempt only, never the batch
        log.exception("query_adapter_error", account=account.key, order=ref.merchant_order_no)
        return f"query:{type(exc).__name__}"[:64]


def _settle(rt: Runtime, v: Verdict, reply: list[ProviderEvent] | str) -> None:
    """What the provider's reply decides for one callback claiming the order."""
    assert v.claimed is not None
    if isinstance(reply, str):
        v.transient, v.deferred = reply, reply == DEFERRED
        return
    if not reply:
        v.unknown = True  # decided with the batch's others (`_not_found`)
        return
    wanted = v.claimed.merchant_order_no
    if any(e.merchant_order_no != wanted for e in reply):
        # The provider answered about another order: none of it may touch either order.
        log.warning("confirm_wrong_order", callback_id=v.callback_id, order=wanted,
                    answered=sorted({e.merchant_order_no for e in reply})[:4])
        v.rejected = "wrong_order_in_reply"
        return
    v.events = list(reply)


def _not_found(rt: Runtime, verdicts: list[Verdict]) -> None:
    """The provider's status API does not know the orders these callbacks name. It may lag the
    provider's callbacks, and an order only a callback told us of is polled by nothing else:
    so this waits like a transient failure, and is `unconfirmed` only on the last attempt.

    Unless the callback reached the ledger before (this is a replay): the provider confirmed
    the order then and has forgotten it since (it purges old orders; a sandbox restarted).
    Waiting could only end `unconfirmed`, a false record of a callback whose event the ledger
    holds, so it ends at once with the outcome it had (a replayed callback keeps its answer,
    as `ledger.apply` keeps it for one the provider still confirms). Only these callbacks pay
    the lookup, one read for the batch, outside the batch's write: the history it reads is
    written only by processing these same callbacks, which this attempt holds the claim of.
    """
    if not verdicts:
        return
    with rt.sessions() as session:
        before = reached_ledger(session, {v.callback_id: _claimed_key(v) for v in verdicts})
    for v in verdicts:
        if v.callback_id in before:
            v.confirmed_before = before[v.callback_id]
        elif v.attempts >= rt.settings.max_attempts:
            v.rejected = "unconfirmed"
        else:
            v.transient = "query:not_found"


def _claimed_key(v: Verdict) -> OrderKey:
    assert v.claimed is not None
    return v.order_key(v.claimed)
