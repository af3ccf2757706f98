"""Provider silence: an account with stale pending orders but no callback for a while.

Callbacks may be lost wholesale (a provider outage, a firewall change, a wrong callback URL).
A silent account gets its oldest pending orders made due at once (once per silence, across
processes: a quiet account is not queried every window against its orders' backoff) and an
alert; the finding goes into the pass report. Orders given up on (`unresolved`) do not count.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ledger.models import Callback, Order
from payhook.accounts import Account
from reconcile.due import PENDING, bring_forward, scoped
from reconcile.outage import RedisCalls

#: How many of a provider's newest callbacks are read to find each account's latest.
SCAN = 5000
#: How long one silence brings orders forward once: an account silent longer (or never heard
#: from) has them brought forward again a day later.
_EPISODE_S = 86400


@dataclass(frozen=True)
class Silence:
    """One silent account: when it was last heard from (None: not within what was read)."""

    provider: str
    account: str
    last_callback_at: datetime | None
    brought_forward: int = 0


def last_heard(
    session: Session, provider: str, cutoff: datetime, scan: int = SCAN
) -> tuple[dict[str, datetime], bool]:
    """Each account's latest callback among the provider's newest `scan` (index
    `ix_callbacks_provider_id`, read backwards), and whether those reach back past `cutoff`.
    """
    newest = (
        select(Callback.account, Callback.received_at)
        .where(Callback.provider == provider)
        .order_by(Callback.id.desc())
        .limit(scan)
        .subquery()
    )
    rows = session.execute(
        select(newest.c.account, func.max(newest.c.received_at), func.count())
        .group_by(newest.c.account)
    ).all()
    latest = {str(acct): _aware(at) for acct, at, _n in rows}
    read = sum(int(n) for _a, _at, n in rows)
    oldest = session.execute(select(func.min(newest.c.received_at))).scalar()
    covers = read < scan or (oldest is not None and _aware(oldest) <= cutoff)
    return latest, covers


def _aware(value: object) -> datetime:
    # Belt and braces: aggregates normally keep the column type, but a naive value is UTC.
    stamp = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(stamp, datetime)
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def has_stale_pending(session: Session, account: Account, cutoff: datetime) -> bool:
    """Whether the account has a pending order still polled (not an open static VA, not given
    up on) created before `cutoff`."""
    found = session.execute(
        select(Order.id)
        .where(
            Order.status == PENDING,
            *scoped(account.provider.name, account.name),
            Order.created_at <= cutoff,
            Order.kind != "static_va",
            Order.next_poll_at.is_not(None),
        )
        .limit(1)
    ).first()
    return found is not None


def find_silent(
    session: Session, accounts: list[Account], now: datetime, window_s: int
) -> list[Silence]:
    """The silent accounts among `accounts`."""
    cutoff = now - timedelta(seconds=window_s)
    by_provider: dict[str, list[Account]] = defaultdict(list)
    for account in accounts:
        if has_stale_pending(session, account, cutoff):
            by_provider[account.provider.name].append(account)
    found: list[Silence] = []
    for provider, candidates in by_provider.items():
        latest, covers = last_heard(session, provider, cutoff)
        for account in candidates:
            at = latest.get(account.name)
            if (at is not None and at <= cutoff) or (at is None and covers):
                found.append(Silence(provider, account.name, at))
    return found


def tighten(
    session: Session, client: redis.Redis, prefix: str, silence: Silence, now: datetime,
    *, window_s: int, limit: int, lease_s: int, calls: RedisCalls,
) -> Silence:
    """Make the silent account's oldest pending orders due now, once per silence (the same last
    callback; a day at most) per account, leaving alone orders a pass holds (`lease_s`). The
    once-claim goes through the pass's Redis calls (`calls`)."""
    heard = silence.last_callback_at.isoformat() if silence.last_callback_at else "never"
    key = f"{prefix}:silence:{silence.provider}/{silence.account}:{heard}"
    if not calls.call(client.set, key, now.isoformat(), nx=True, ex=max(window_s, _EPISODE_S)):
        return silence
    cutoff = now - timedelta(seconds=window_s)
    moved = bring_forward(
        session, now, silence.provider, silence.account, limit=limit, created_before=cutoff,
        leased_until=now + timedelta(seconds=lease_s),
    )
    return Silence(silence.provider, silence.account, silence.last_callback_at, moved)
