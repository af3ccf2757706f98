"""The pass report (what polling found, what is still pending and how old, the ledger check)
and the alerts its findings call for.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from ledger.models import Order
from ledger.money import format_minor
from ledger.views import balances, iso, unbalanced_journals
from reconcile.alerts import REF, build_alert
from reconcile.due import PENDING, scoped
from reconcile.poll import Polled
from reconcile.silence import Silence

#: Ageing buckets of still-pending orders: (label, upper bound of age in seconds).
AGEING = (("<1h", 3600), ("1-6h", 6 * 3600), ("6-24h", 86400), ("1-7d", 7 * 86400))
OVER = ">7d"


@dataclass
class Section:
    """A list of findings: how many, and the first `cap` of them."""

    cap: int
    count: int = 0
    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, item: dict[str, Any]) -> None:
        self.count += 1
        if len(self.items) < self.cap:
            self.items.append(item)

    def json(self) -> dict[str, Any]:
        return {"count": self.count, "orders": self.items}


@dataclass
class AccountStats:
    """One account's part of the pass."""

    claimed: int = 0
    queried: int = 0
    skipped: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    breaker: str = "closed"
    findings: dict[str, list[str]] = field(default_factory=dict)  # kind → merchant order nos

    def note(self, kind: str, merchant_order_no: str) -> None:
        self.findings.setdefault(kind, []).append(merchant_order_no)


@dataclass(frozen=True)
class AlertSpec:
    """One alert to send: its dedupe key and a message without secrets or customer data."""

    incident: str
    message: str


class PassReport:
    """Accumulates a pass's findings; `dumps` is the stored report JSON."""

    def __init__(self, started_at: datetime, provider: str | None, account: str | None,
                 cap: int) -> None:
        self.started_at = started_at
        self.scope = {"provider": provider, "account": account}
        self.accounts: dict[str, AccountStats] = {}
        self.resolved = Section(cap)
        self.not_found = Section(cap)
        self.mismatches = Section(cap)
        self.needs_review = Section(cap)
        self.unresolved = Section(cap)
        self.errors = Section(cap)
        self.silence: list[Silence] = []
        self.alerts: dict[str, Any] = {"sent": [], "suppressed": 0, "failed": 0}
        self.tail: dict[str, Any] = {}

    def stats(self, account_key: str) -> AccountStats:
        return self.accounts.setdefault(account_key, AccountStats())

    def add_polled(self, account_key: str, polled: Iterable[Polled]) -> None:
        """Sort each polled order into the sections it belongs to."""
        stats = self.stats(account_key)
        for p in polled:
            ref, due = p.order.ref, p.order
            if p.error == "skipped":
                stats.skipped += 1
                continue
            stats.queried += 1
            if p.error is not None:
                stats.errors[p.error] = stats.errors.get(p.error, 0) + 1
            if p.error == "not_found":
                self.not_found.add({"order": ref})
                stats.note("not_found", due.merchant_order_no)
            elif p.error in ("auth", "permanent"):
                self.errors.add({"order": ref, "error": p.error, "code": p.code})
                stats.note(p.error, due.merchant_order_no)
            if p.status_before == "pending" and p.status_after != "pending":
                self.resolved.add({"order": ref, "status": p.status_after, "seen": p.seen})
            for event_id, status, seen in p.repayments:  # a static VA stays pending
                self.resolved.add({"order": ref, "repayment": event_id, "status": status,
                                   "seen": [seen]})
            self._review(stats, p)

    def _review(self, stats: AccountStats, p: Polled) -> None:
        ref, due = p.order.ref, p.order
        if p.amount_mismatch:
            got = str(p.amount_seen) if p.amount_seen is not None else None
            expected = format_minor(due.amount_minor, due.currency)
            self.mismatches.add({"order": ref, "kind": "amount", "expected": expected, "got": got})
        if p.currency_seen is not None:
            self.mismatches.add({"order": ref, "kind": "currency", "expected": due.currency,
                                 "got": p.currency_seen})
        if "conflicting_status" in p.flags:
            self.mismatches.add({"order": ref, "kind": "status", "expected": p.status_before,
                                 "got": p.seen})
        if p.unresolved:
            self.unresolved.add({"order": ref, "created_at": iso(due.created_at)})
        reasons = p.flags + (["unresolved"] if p.unresolved else [])
        if reasons:
            self.needs_review.add({"order": ref, "reasons": reasons})
            stats.note("review", due.merchant_order_no)

    def dumps(self, finished_at: datetime | None) -> str:
        body: dict[str, Any] = {
            "started_at": iso(self.started_at),
            "finished_at": iso(finished_at),
            "scope": self.scope,
            "accounts": {
                key: {"claimed": s.claimed, "queried": s.queried, "skipped": s.skipped,
                      "errors": s.errors, "breaker": s.breaker}
                for key, s in sorted(self.accounts.items())
            },
            "resolved_by_poll": self.resolved.json(),
            "not_found": self.not_found.json(),
            "mismatches": self.mismatches.json(),
            "needs_review": self.needs_review.json(),
            "unresolved": self.unresolved.json(),
            "errors": self.errors.json(),
            "silence": [
                {"account": f"{s.provider}/{s.account}",
                 "last_callback_at": iso(s.last_callback_at), "brought_forward": s.brought_forward}
                for s in self.silence
            ],
            "alerts": self.alerts,
        }
        return json.dumps(body | self.tail, sort_keys=False)

    def add_ledger_state(self, session: Session, now: datetime) -> None:
        """Still-pending orders (count, oldest refs, ageing) and the ledger's invariant."""
        self.tail["still_pending"] = still_pending(
            session, now, self.scope["provider"], self.scope["account"], self.resolved.cap
        )
        unbalanced = unbalanced_journals(session)
        self.tail["ledger"] = {
            "balanced": not unbalanced,
            "unbalanced_journals": unbalanced[: self.resolved.cap],
            "balances": balances(session),
        }

    def alert_specs(self, day: str) -> list[AlertSpec]:
        """The alerts this pass's findings call for, one incident per account, kind and day."""
        specs: list[AlertSpec] = []
        titles = {"review": "orders need review", "not_found": "orders not found at provider",
                  "auth": "provider refuses our credentials", "permanent": "query errors"}
        for key, stats in sorted(self.accounts.items()):
            provider, account = key.split("/", 1)
            for kind, order_nos in sorted(stats.findings.items()):
                refs = [n for n in order_nos if REF.match(n)]
                message = build_alert(titles.get(kind, kind), provider=provider, account=account,
                                      counts={kind: len(order_nos)}, refs=refs)
                specs.append(AlertSpec(f"recon:{key}:{kind}:{day}", message))
        for key, stats in sorted(self.accounts.items()):
            if stats.breaker == "open":
                provider, account = key.split("/", 1)
                message = build_alert("provider busy; status queries paused",
                                      provider=provider, account=account,
                                      counts={"skipped": stats.skipped})
                specs.append(AlertSpec(f"recon:{key}:breaker:{day}", message))
        for s in self.silence:
            message = build_alert("no callbacks received; polling tightened",
                                  provider=s.provider, account=s.account,
                                  counts={"brought_forward": s.brought_forward})
            specs.append(AlertSpec(f"recon:{s.provider}/{s.account}:silence:{day}", message))
        ledger = self.tail.get("ledger", {})
        if ledger and not ledger["balanced"]:
            count = len(ledger["unbalanced_journals"])
            message = build_alert("ledger unbalanced", counts={"journals": count})
            specs.append(AlertSpec(f"recon:ledger:unbalanced:{day}", message))
        return specs


def still_pending(
    session: Session, now: datetime, provider: str | None, account: str | None, cap: int
) -> dict[str, Any]:
    """Pending orders (open static VAs aside): count, ageing buckets, the oldest `cap` refs."""
    where = [Order.status == PENDING, Order.kind != "static_va", *scoped(provider, account)]
    younger = [
        func.coalesce(func.sum(case((Order.created_at > now - timedelta(seconds=s), 1),
                                    else_=0)), 0)
        for _label, s in AGEING
    ]
    row = session.execute(select(func.count(), *younger).where(*where)).one()
    total, cumulative = int(row[0]), [int(v) for v in row[1:]]
    ageing: dict[str, int] = {}
    below = 0
    for (label, _s), upto in zip(AGEING, cumulative, strict=True):
        ageing[label], below = upto - below, upto
    ageing[OVER] = total - below
    oldest = session.execute(
        select(Order.provider, Order.account, Order.merchant_order_no)
        .where(*where).order_by(Order.created_at).limit(cap)
    ).all()
    return {"count": total, "ageing": ageing, "orders": [f"{p}/{a}/{n}" for p, a, n in oldest]}
