"""An order's history on the real database: one entry per callback, however often replayed."""

from __future__ import annotations

from sqlalchemy import select

from ledger.history import reached_ledger
from ledger.models import OrderEvent, Payment
from ledger.status import Status
from tests.unit.ledger_db import Ledger, event, ledger, number

__all__ = ["ledger"]


def test_a_replayed_callback_adds_no_history_entry(ledger: Ledger) -> None:
    """Callbacks 101 (applied) and 102 (the same event: duplicate), each replayed, 102 twice:
    each keeps its outcome and its one history entry; one payment is booked."""
    no = number()
    ledger.register(no)
    outcomes = [ledger.apply(event(no, no + "T", callback_id=cb)).outcome.value
                for cb in (101, 102, 101, 102, 102)]
    assert outcomes == ["applied", "duplicate", "applied", "duplicate", "duplicate"]
    with ledger.sessions() as session:
        history = session.execute(
            select(OrderEvent.callback_id, OrderEvent.outcome)
            .where(OrderEvent.order_id == ledger.order(no).id).order_by(OrderEvent.id)).all()
    assert [tuple(h) for h in history] == [(101, "applied"), (102, "duplicate")]
    assert ledger.count(no, Payment) == 1


def test_replayed_stale_and_conflicting_callbacks_add_no_history_entry(ledger: Ledger) -> None:
    """A stale and a conflicting callback, replayed, answer as they did and write nothing."""
    no = number()
    ledger.register(no)
    first = [ledger.apply(event(no, no + s.name, s, callback_id=cb)).outcome.value
             for cb, s in ((1, Status.SUCCEEDED), (2, Status.PENDING), (3, Status.FAILED))]
    again = [ledger.apply(event(no, no + s.name, s, callback_id=cb)).outcome.value
             for cb, s in ((2, Status.PENDING), (3, Status.FAILED))]
    assert first == ["applied", "stale", "conflict"]
    assert again == ["stale", "conflict"]
    assert ledger.count(no, OrderEvent) == 3


def test_reached_ledger_gives_each_callback_the_outcome_its_events_add_up_to(
    ledger: Ledger,
) -> None:
    """Callback 202's confirmation brought two events, the first a duplicate of 201's success,
    the second a failure (a conflict): the callback ended `conflict` (the strongest), and that
    is what a replay the provider has forgotten keeps, not its first entry's `duplicate`. A
    callback with no entry of its own on the order is not listed."""
    no = number()
    ledger.register(no)
    ledger.apply(event(no, no + "T", callback_id=201))
    second = [ledger.apply(event(no, no + "T", callback_id=202)).outcome.value,
              ledger.apply(event(no, no + "F", Status.FAILED, callback_id=202)).outcome.value]
    assert second == ["duplicate", "conflict"]
    key = ("opay", "default", no)
    with ledger.sessions() as session:
        found = reached_ledger(session, {201: key, 202: key, 203: key})
    assert found == {201: "applied", 202: "conflict"}
