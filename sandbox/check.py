"""The end-of-run check: wait (bounded) for in-flight callbacks and lost-callback polls to
settle, then hold every generated order against the API and count what went where."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ledger.money import to_minor
from sandbox.client import CallbackView, OrderView
from sandbox.scenarios import Expected, Sent
from sandbox.traffic import Generator

KICK_EVERY_S = 3.0


@dataclass(frozen=True)
class Verdict:
    """One order judged: `ok`, `lost` (not where expected) or `double` (credited too much)."""

    kind: str
    message: str = ""


@dataclass
class Report:
    """What the run did, and whether every order ended where the generator said."""

    orders: int
    generated: int  # callbacks acknowledged by the receiver
    states: Counter[str]
    reasons: Counter[str]
    lost_callbacks: int  # orders whose callback was never sent
    lost_resolved: int  # ... of which a poll resolved
    resolved_by_poll: int  # orders with a poll applied (lost callbacks, or polls that won a race)
    lost: int
    double_applied: int
    unacknowledged: int
    ack_p50_ms: float
    ack_p99_ms: float
    elapsed_s: float
    traffic_s: float
    ledger: str
    settled: bool
    problems: list[str] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)

    def last_line(self) -> str:
        """The machine-readable line that ends every sandbox run."""
        return (f"sandbox: generated={self.generated} applied={self.states['applied']} "
                f"duplicate={self.states['duplicate']} rejected={self.states['rejected']} "
                f"resolved_by_poll={self.resolved_by_poll} lost={self.lost} "
                f"double_applied={self.double_applied}")


def states_match(sent: list[Sent], actual: Counter[str], polled: int) -> bool:
    """The final states are the expected ones, allowing up to `polled` callbacks to be in their
    `if_polled` state: a reconciliation poll that applied the same provider event first makes
    its callback a duplicate (or an earlier notice stale)."""
    movable = [i for i, s in enumerate(sent) if s.if_polled != s.expect]
    for count in range(min(polled, len(movable)) + 1):
        for moved in itertools.combinations(movable, count):
            states = Counter(s.if_polled if i in moved else s.expect for i, s in enumerate(sent))
            if states == +actual:
                return True
    return False


def judge(e: Expected, order: OrderView | None, views: dict[int, CallbackView]) -> Verdict:
    """Hold one order (and the callbacks sent for it) against its expectation."""
    ref = f"{e.provider}/{e.merchant_order_no} ({e.scenario})"
    if e.error or not e.finished:
        return Verdict("lost", f"{ref}: {e.error or 'scenario did not finish'}")
    if refused := [s.status for s in e.sent if s.callback_id is None]:
        return Verdict("lost", f"{ref}: callback not acknowledged (HTTP {refused})")
    if order is None:
        return Verdict("lost", f"{ref}: order not found")
    if order.paid > e.paid or order.payments > e.payments:
        return Verdict("double", f"{ref}: paid {order.paid} in {order.payments} payment(s), "
                                 f"expected {e.paid} in {e.payments}")
    ids = [s.callback_id for s in e.sent if s.callback_id is not None]
    if waiting := [i for i in ids if i not in views or not views[i].final]:
        return Verdict("lost", f"{ref}: callbacks {waiting} not final")
    problems = []
    if order.status != e.status:
        problems.append(f"status {order.status}, expected {e.status}")
    if (order.paid, order.payments) != (e.paid, e.payments):
        problems.append(f"paid {order.paid} in {order.payments}, expected {e.paid} in {e.payments}")
    if order.review_reasons != e.flags:
        problems.append(f"review {sorted(order.review_reasons)}, expected {sorted(e.flags)}")
    if e.by_poll and not order.poll_applied:
        problems.append("not resolved by polling")
    actual = Counter(views[i].label for i in ids)
    if not states_match(e.sent, actual, order.poll_applied):
        wanted = Counter(s.expect for s in e.sent)
        problems.append(f"callbacks {dict(actual)}, expected {dict(wanted)}")
    return Verdict("lost", f"{ref}: {'; '.join(problems)}") if problems else Verdict("ok")


def ledger_problems(orders: list[Expected], before: dict[tuple[str, str], int],
                    after: dict[tuple[str, str], int]) -> tuple[int, list[str]]:
    """Compare the receipts accounts' movement with the expected sum: (sign, messages), sign
    -1 when less was credited, +1 when more, 0 when they match."""
    expected: dict[tuple[str, str], int] = {}
    for e in orders:
        # ledger.booking.ledger_accounts: a payment credits receipts:<provider>/<account>
        key = (f"receipts:{e.provider}/default", e.currency)
        expected[key] = expected.get(key, 0) - to_minor(e.paid, e.currency)
    accounts = {account for account, _ in expected}
    sign, messages = 0, []
    for key in sorted(set(expected) | {k for k in after if k[0] in accounts}):
        moved = after.get(key, 0) - before.get(key, 0)
        if moved != expected.get(key, 0):
            sign = 1 if moved < expected.get(key, 0) else -1
            messages.append(f"ledger {key[0]} {key[1]} moved {moved} minor units, "
                            f"expected {expected.get(key, 0)}")
    return sign, messages


async def settle(gen: Generator, timeout_s: float, abort: Callable[[], bool],
                 kick: bool = False) -> bool:
    """Wait until the scenarios have played, every callback is final and every lost-callback
    order was polled; True if that happened before the timeout (or `abort()`)."""
    deadline = time.monotonic() + timeout_s
    while not await gen.drain(1.0):
        if time.monotonic() > deadline or abort():
            return False
    last_kick = 0.0
    while time.monotonic() < deadline and not abort():
        await gen.tracker.refresh()
        await gen.tracker.refresh_watched()
        unresolved = not all(gen.tracker.watched.values())
        if not gen.tracker.unfinished() and not unresolved:
            return True
        if kick and unresolved and time.monotonic() - last_kick >= KICK_EVERY_S:
            last_kick = time.monotonic()
            await gen.api.start_reconcile()
        await asyncio.sleep(0.5)
    return False


async def verify(gen: Generator, settled: bool) -> Report:
    """Count callback states and judge every generated order against the API."""
    await gen.tracker.refresh_all()
    views = gen.tracker.states
    found: list[OrderView | None] = []
    for start in range(0, len(gen.orders), 32):
        batch = gen.orders[start:start + 32]
        found += await asyncio.gather(*(gen.api.order(e.provider, e.merchant_order_no)
                                        for e in batch))
    verdicts = [judge(e, o, views) for e, o in zip(gen.orders, found, strict=True)]
    sign, ledger_msgs = ledger_problems(gen.orders, gen.balances_before, await gen.api.balances())
    lost = sum(v.kind == "lost" for v in verdicts) + (sign < 0)
    double = sum(v.kind == "double" for v in verdicts) + (sign > 0)
    states, reasons = gen.tracker.counts()
    progress = gen.progress()
    report = Report(
        orders=len(gen.orders), generated=gen.acks.acknowledged, states=states, reasons=reasons,
        lost_callbacks=sum(e.by_poll for e in gen.orders),
        lost_resolved=sum(1 for e, o in zip(gen.orders, found, strict=True)
                          if e.by_poll and o is not None and o.poll_applied),
        resolved_by_poll=sum(1 for o in found if o is not None and o.poll_applied),
        lost=lost, double_applied=double, unacknowledged=sum(gen.acks.refused.values()),
        ack_p50_ms=progress.ack_p50_ms, ack_p99_ms=progress.ack_p99_ms,
        elapsed_s=progress.elapsed_s, traffic_s=progress.traffic_s,
        ledger="; ".join(ledger_msgs) or "receipts match", settled=settled,
        problems=[v.message for v in verdicts if v.kind != "ok"] + ledger_msgs)
    for e in gen.orders:
        report.examples.setdefault(e.scenario, f"{e.provider} {e.merchant_order_no}")
    return report


async def run_for(gen: Generator, seconds: float, *, settle_timeout_s: float = 60,
                  kick: bool = False) -> Report:
    """Open, generate for `seconds`, settle, check, close: one whole run on the current loop."""
    await gen.open()
    try:
        stop = asyncio.Event()
        traffic = asyncio.create_task(gen.run(stop))
        await asyncio.sleep(seconds)
        stop.set()
        await traffic
        settled = await settle(gen, settle_timeout_s, lambda: False, kick)
        return await verify(gen, settled)
    finally:
        await gen.close()
