"""Processing a batch of stored callbacks: judge each (decode, verify, confirm), then apply.

Judging runs outside any transaction (CPU and provider queries). Applying runs in one
transaction with a savepoint per callback, so the round trip and the commit are shared while
each callback still ends in its own state and one bad callback cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ledger.apply import Incoming, apply_event
from ledger.models import NON_FINAL, Callback
from ledger.status import Kind, Outcome, Status, strongest
from payhook.accounts import Account
from providers.base import Headers, OrderRef, ProviderEvent, RawCallback, Trust
from providers.errors import QueryError, QueryNotFound, Rejected
from workers.runtime import Runtime

log = structlog.get_logger(__name__)


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


@dataclass
class BatchResult:
    """Counts by final state, and the ids to try again later."""

    states: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)  # "state|reason" → count
    retry: list[int] = field(default_factory=list)
    retry_attempts: int = 0  # the most attempts any retried callback has made


def now_utc() -> datetime:
    return datetime.now(UTC)


def process_batch(rt: Runtime, ids: list[int]) -> BatchResult:
    """Bring every non-final callback in `ids` to a final state (or schedule a retry)."""
    with rt.sessions() as session:
        rows = list(
            session.execute(
                select(Callback).where(Callback.id.in_(ids), Callback.state.in_(NON_FINAL))
            ).scalars()
        )
    verdicts = [_judge(rt, cb) for cb in rows]
    _confirm(rt, [v for v in verdicts if v.claimed is not None and not v.events])
    result = BatchResult()
    with rt.sessions.begin() as session:
        for verdict in verdicts:
            state, reason = _finish(rt, session, verdict)
            result.states[state] = result.states.get(state, 0) + 1
            key = f"{state}|{reason or ''}"
            result.reasons[key] = result.reasons.get(key, 0) + 1
            if state == "processing":
                result.retry.append(verdict.callback_id)
                result.retry_attempts = max(result.retry_attempts, verdict.attempts + 1)
    return result


def _judge(rt: Runtime, cb: Callback) -> Verdict:
    verdict = Verdict(cb.id, cb.attempts)
    account = rt.accounts.get(cb.provider, cb.account)
    if account is None:
        verdict.rejected = "account_mismatch"  # the account was removed from configuration
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
    except Rejected as exc:
        verdict.rejected = exc.reason
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


def _confirm(rt: Runtime, verdicts: list[Verdict]) -> None:
    """Ask the providers about every claimed event, concurrently."""
    if not verdicts:
        return

    async def one(v: Verdict) -> None:
        assert v.claimed is not None
        assert v.account is not None
        ref = OrderRef(v.claimed.merchant_order_no, v.claimed.provider_order_no)
        if v.claimed.kind is not None:
            ref = OrderRef(ref.merchant_order_no, ref.provider_order_no, v.claimed.kind)
        transport = rt.transport(v.account.provider.name, v.account.name)
        try:
            events = await v.account.provider.query(
                transport, v.account.config, ref, int(now_utc().timestamp() * 1000)
            )
        except QueryNotFound:
            v.rejected = "unconfirmed"
            return
        except QueryError as exc:
            v.transient = f"query:{type(exc).__name__}:{exc.code}"[:64]
            return
        if not events:
            v.rejected = "unconfirmed"
        v.events = events

    async def all_of() -> None:
        await asyncio.gather(*(one(v) for v in verdicts))

    rt.run(all_of())


def _finish(rt: Runtime, session: Session, v: Verdict) -> tuple[str, str | None]:
    """Write the callback's final state (and apply its events) inside a savepoint."""
    now = now_utc()
    current = session.execute(
        select(Callback.state).where(Callback.id == v.callback_id).with_for_update()
    ).scalar_one()
    if current not in NON_FINAL:
        return str(current), None  # a redelivered task: another worker already finished it
    order_no = v.claimed or (v.events[0] if v.events else None)
    values: dict[str, object] = {"attempts": v.attempts + 1, "processed_at": now}
    if order_no is not None:
        values["merchant_order_no"] = order_no.merchant_order_no[:128]
    structlog.contextvars.bind_contextvars(
        callback_id=v.callback_id, order=values.get("merchant_order_no")
    )
    try:
        if v.rejected is None and v.transient is None:
            with session.begin_nested():
                outcomes = [_apply(session, v, e, now) for e in v.events]
                values.update(state=strongest(outcomes).value, reason=None)
                _set(session, v.callback_id, values)
            log.info("callback_processed", state=values["state"])
            return str(values["state"]), None
    except Exception as exc:  # this callback only: its savepoint is rolled back
        log.warning("callback_apply_failed", error=str(exc)[:200])
        v.transient = f"apply:{type(exc).__name__}"[:64]
    finally:
        structlog.contextvars.unbind_contextvars("callback_id", "order")
    if v.rejected is not None:
        values.update(state="rejected", reason=v.rejected)
    elif v.attempts + 1 >= rt.settings.max_attempts:
        values.update(state="dead", reason=v.transient)
    else:
        values.update(state="processing", reason=v.transient)
    _set(session, v.callback_id, values)
    log.info(
        "callback_processed",
        callback_id=v.callback_id,
        state=values["state"],
        reason=values["reason"],
    )
    return str(values["state"]), v.rejected or v.transient


def _apply(session: Session, v: Verdict, event: ProviderEvent, now: datetime) -> Outcome:
    assert v.account is not None
    incoming = Incoming(
        provider=v.account.provider.name,
        account=v.account.name,
        merchant_order_no=event.merchant_order_no,
        event_id=event.event_id,
        provider_status=event.provider_status,
        status=Status(event.status.value),
        amount=event.amount,
        currency=event.currency,
        source="callback",
        callback_id=v.callback_id,
        provider_order_no=event.provider_order_no,
        paid_at=event.paid_at,
        kind=Kind(event.kind.value) if event.kind is not None else None,
        flags=event.flags,
        poll_after=now + timedelta(seconds=v.account.config.stale_after_s),
    )
    return apply_event(session, incoming, now).outcome


def _set(session: Session, callback_id: int, values: dict[str, object]) -> None:
    # Only a non-final row moves: a concurrent worker that finished it first wins, idempotently.
    session.execute(
        update(Callback)
        .where(Callback.id == callback_id, Callback.state.in_(NON_FINAL))
        .values(**values)
    )
