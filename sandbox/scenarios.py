"""Order scenarios: what a provider sends for one order, fault by fault, and where payhook must
leave that order (CONTRACT §5) — status, paid amount, payments, flags, and each callback's state.

Steps whose outcome depends on the previous one being processed wait for it (`settle`), as a
real provider's late or out-of-order delivery comes seconds to hours later.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from providers.base import HttpRequest

if TYPE_CHECKING:
    from sandbox.traffic import Generator

SETTLE_TIMEOUT_S = 30.0
REPLAY_AGE = timedelta(hours=2)  # far outside the default 300 s timestamp window


@dataclass
class Sent:
    """One delivered callback and the final state it must reach (`rejected:<reason>` form),
    or `after_poll` when a reconciliation poll got to the order first."""

    callback_id: int | None
    expect: str
    status: int
    after_poll: str | None = None

    @property
    def if_polled(self) -> str:
        """The state when a poll applied this event (or a later one) first."""
        if self.after_poll is not None:
            return self.after_poll
        return "duplicate" if self.expect == "applied" else self.expect


@dataclass
class Expected:
    """Where one generated order must end, and the callbacks sent for it."""

    scenario: str
    provider: str
    merchant_order_no: str
    kind: str
    amount: Decimal
    currency: str
    status: str = "pending"
    paid: Decimal = Decimal(0)
    payments: int = 0
    flags: frozenset[str] = frozenset()
    by_poll: bool = False
    sent: list[Sent] = field(default_factory=list)
    finished: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "provider": self.provider,
                "merchant_order_no": self.merchant_order_no, "kind": self.kind,
                "amount": str(self.amount), "currency": self.currency, "status": self.status,
                "paid": str(self.paid), "payments": self.payments, "flags": sorted(self.flags),
                "by_poll": self.by_poll,
                "callbacks": [[s.callback_id, s.expect] for s in self.sent]}


class OrderRun:
    """Builds, publishes and sends one order's provider events; records the expectation."""

    def __init__(self, gen: Generator, expected: Expected, rng: random.Random) -> None:
        self.gen, self.e, self.rng = gen, expected, rng
        self.ref = f"{expected.provider[:2].upper()}{secrets.token_hex(6)}"  # provider's order no
        self.plain = expected.provider == "opay" and rng.random() < 0.3
        self.form = expected.provider == "otgpay" and rng.random() < 0.3

    @property
    def confirmed_by_query(self) -> bool:
        """MTPay and plain OPay callbacks are hints: payhook applies what the query answers."""
        return self.e.provider == "mtpay" or self.plain

    def fields(self, status: str, amount: Decimal | None = None, *, ref: str | None = None,
               when: datetime | None = None) -> dict[str, Any]:
        return self.gen.world.fields(self.e.provider, self.e.merchant_order_no, status,
                                     self.e.amount if amount is None else amount,
                                     event_id=ref or self.ref, when=when)

    def publish(self, fields: dict[str, Any]) -> None:
        """What the provider's query API reports from now on."""
        self.gen.world.publish(self.e.provider, fields)

    def request(self, fields: dict[str, Any], *, forged: bool = False,
                old: bool = False) -> HttpRequest:
        stamp = datetime.now(UTC) - REPLAY_AGE if old else None
        ts = int(stamp.timestamp() * 1000) if stamp else None
        plain = self.plain and not forged and not old
        return self.gen.world.callback(self.e.provider, fields, forged=forged, timestamp_ms=ts,
                                       form=self.form, plain=plain)

    async def send(self, what: dict[str, Any] | HttpRequest, expect: str,
                   after_poll: str | None = None) -> None:
        request = what if isinstance(what, HttpRequest) else self.request(what)
        delivery = await self.gen.deliver(request)
        self.e.sent.append(Sent(delivery.callback_id, expect, delivery.status, after_poll))

    async def settle(self) -> None:
        """Wait until this order's callbacks so far are processed."""
        ids = [s.callback_id for s in self.e.sent if s.callback_id is not None]
        await self.gen.tracker.wait_final(ids, SETTLE_TIMEOUT_S)

    def end(self, status: str, paid: Decimal | None = None, payments: int = 1,
            flags: tuple[str, ...] = (), *, by_poll: bool = False) -> None:
        self.e.status, self.e.payments, self.e.flags = status, payments, frozenset(flags)
        self.e.paid = self.e.amount if paid is None else paid
        self.e.by_poll = by_poll

    def other_amount(self, factor: str) -> Decimal:
        places = Decimal(1) if self.e.currency == "IDR" else Decimal("0.01")
        return (self.e.amount * Decimal(factor)).quantize(places)


async def clean(o: OrderRun) -> None:
    """Success (sometimes after a pending notice), or an unsuccessful end."""
    if o.rng.random() < 0.35:
        pending = o.fields("pending")
        o.publish(pending)
        await o.send(pending, "applied")
        await o.settle()
    if o.rng.random() < 0.12:
        ends = {"monetapay": ["failed"], "otgpay": ["failed"]}
        status = o.rng.choice(ends.get(o.e.provider, ["failed", "closed", "cancelled"]))
        final = o.fields(status)
        o.publish(final)
        await o.send(final, "applied")
        o.end(status, Decimal(0), payments=0)
        return
    success = o.fields("succeeded")
    o.publish(success)
    await o.send(success, "applied")
    o.end("succeeded")


async def duplicate(o: OrderRun) -> None:
    """The same success delivered two or three times (a provider retrying)."""
    success = o.fields("succeeded")
    o.publish(success)
    request = o.request(success)
    await o.send(request, "applied")
    for _ in range(o.rng.choice((1, 1, 2))):
        await o.send(request, "duplicate")
    o.end("succeeded")


async def out_of_order(o: OrderRun) -> None:
    """An old pending notice arriving after the success: stale (a duplicate when confirmed by
    query, since the query answers the success again)."""
    success = o.fields("succeeded")
    o.publish(success)
    await o.send(success, "applied")
    await o.settle()
    earlier = o.fields("pending", when=datetime.now(UTC) - timedelta(minutes=1))
    await o.send(earlier, "duplicate" if o.confirmed_by_query else "stale")
    o.end("succeeded")


async def late_success(o: OrderRun) -> None:
    """Failed, then paid after all: applied and flagged `late_success`."""
    failed = o.fields("failed")
    o.publish(failed)
    await o.send(failed, "applied")
    await o.settle()
    success = o.fields("succeeded")
    o.publish(success)
    await o.send(success, "applied")
    o.end("succeeded", flags=("late_success",))


async def forged(o: OrderRun) -> None:
    """A forged success (rejected) followed by the genuine one."""
    success = o.fields("succeeded")
    o.publish(success)
    await o.send(o.request(success, forged=True), "rejected:bad_signature")
    await o.send(success, "applied")
    o.end("succeeded")


async def replayed(o: OrderRun) -> None:
    """A captured callback replayed hours later (OPay, MTPay: rejected `bad_timestamp`)."""
    success = o.fields("succeeded")
    o.publish(success)
    await o.send(o.request(success, old=True), "rejected:bad_timestamp")
    await o.send(success, "applied")
    o.end("succeeded")


async def wrong_amount(o: OrderRun) -> None:
    """OTGPAY partial/over-payment flags; elsewhere an amount that differs from the order's."""
    if o.e.provider == "otgpay":
        status, factor, flag = o.rng.choice((("partial", "0.5", "partial_payment"),
                                             ("overpaid", "1.2", "overpayment")))
    else:
        status, factor, flag = "succeeded", "0.9", "amount_mismatch"
    paid = o.other_amount(factor)
    fields = o.fields(status, paid)
    o.publish(fields)
    await o.send(fields, "applied")
    o.end("succeeded", paid, flags=(flag,))


async def static_va(o: OrderRun) -> None:
    """MonetaPay static VA: several repayments, each its own order_no; one delivered twice."""
    records = []
    for _ in range(o.rng.randint(2, 4)):
        amount = Decimal(o.rng.randrange(10_000, 500_000, 500))
        record = o.fields("succeeded", amount, ref=f"VA{secrets.token_hex(6)}")
        o.publish(record)
        records.append((record, amount))
        await o.send(record, "applied")
    await o.send(o.rng.choice(records)[0], "duplicate")
    o.end("pending", sum((a for _, a in records), Decimal(0)), payments=len(records))


async def lost(o: OrderRun) -> None:
    """The success callback never arrives: only a reconciliation pass can resolve the order.

    The success is published at once, so whenever the poll comes it finds it (a poll that
    found the order still pending would back off for minutes). With a pending notice first
    (signature-trusted only: a confirming query would already see the success), that notice
    is applied, or stale if the poll came first.
    """
    success = o.fields("succeeded")
    if not o.confirmed_by_query and o.rng.random() < 0.3:
        pending = o.fields("pending")
        await o.send(pending, "applied", after_poll="stale")
    o.publish(success)
    o.gen.tracker.watch(o.e.provider, o.e.merchant_order_no)
    o.end("succeeded", by_poll=True)


@dataclass(frozen=True)
class Scenario:
    """A scenario, the providers it applies to, and its callbacks per order (for pacing)."""

    run: Callable[[OrderRun], Awaitable[None]]
    providers: tuple[str, ...]
    callbacks: float


ALL = ("opay", "monetapay", "otgpay", "mtpay")
SCENARIOS: dict[str, Scenario] = {
    "clean": Scenario(clean, ALL, 1.35),
    "duplicate": Scenario(duplicate, ALL, 2.3),
    "out_of_order": Scenario(out_of_order, ALL, 2),
    "late_success": Scenario(late_success, ALL, 2),
    "forged": Scenario(forged, ALL, 2),
    "replayed": Scenario(replayed, ("opay", "mtpay"), 2),
    "amount": Scenario(wrong_amount, ALL, 1),
    "static_va": Scenario(static_va, ("monetapay",), 4),
    "lost": Scenario(lost, ALL, 0.3),
}
