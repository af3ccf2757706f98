"""A repeat registration on the real database: which leaving-out of `provider_order_no` is the
same request (CONTRACT §3: 409 when a repeat differs in any field but `customer_phone`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from ledger.db import make_engine
from ledger.migrate import upgrade
from ledger.orders import OrderConflict, OrderSpec, register_order
from ledger.status import Kind
from tests.unit.ledger_db import Ledger, event, ledger, number

__all__ = ["ledger"]


def _register(ledger: Ledger, no: str, provider_order_no: str | None = None) -> bool:
    """POST /api/orders' ledger step: True for 201, False for 200, OrderConflict for 409."""
    with ledger.sessions.begin() as session:
        spec = OrderSpec("opay", "default", no, Kind.PAYMENT, 30000, "NGN",
                         provider_order_no=provider_order_no)
        return register_order(session, spec, datetime.now(UTC))[1]


def test_a_repeat_leaving_out_the_provider_order_no_its_registration_named_conflicts(
    ledger: Ledger,
) -> None:
    """The registration named P2: a repeat without it differs from that request (409), before
    and after a callback with P2 reached the order; with P2 it is the same (200)."""
    no = number()
    assert _register(ledger, no, "P2") is True
    with pytest.raises(OrderConflict):
        _register(ledger, no)
    assert _register(ledger, no, "P2") is False
    ledger.apply(event(no, no + "T", provider_order_no="P2"))
    with pytest.raises(OrderConflict):
        _register(ledger, no)
    with pytest.raises(OrderConflict):
        _register(ledger, no, "P3")


def test_a_repeat_leaving_out_a_provider_order_no_a_callback_filled_in_is_the_same(
    ledger: Ledger,
) -> None:
    """The registration named none and a callback filled in P9: a repeat without it is the
    request the client made (200), one with P9 agrees with the order (200), another is 409."""
    no = number()
    assert _register(ledger, no) is True
    ledger.apply(event(no, no + "T", provider_order_no="P9"))
    assert ledger.order(no).provider_order_no == "P9"
    assert _register(ledger, no) is False
    assert _register(ledger, no, "P9") is False
    with pytest.raises(OrderConflict):
        _register(ledger, no, "P8")


def test_a_late_registration_leaves_the_callbacks_provider_order_no_to_the_callback(
    ledger: Ledger,
) -> None:
    """A callback created the order with P7; the registration that follows names none: its
    repeats without one are the same request (200)."""
    no = number()
    ledger.apply(event(no, no + "T", provider_order_no="P7"))
    assert _register(ledger, no) is True
    assert _register(ledger, no) is False
    assert _register(ledger, no, "P7") is False



def test_a_late_registration_naming_another_provider_order_no_than_the_callbacks_conflicts(
    ledger: Ledger,
) -> None:
    """A callback created the order with P7; a registration naming P8 contradicts what the
    provider said: a 409, the order left as the callback made it (unregistered, P7), and a
    registration that agrees is then the first one (201)."""
    no = number()
    ledger.apply(event(no, no + "T", provider_order_no="P7"))
    with pytest.raises(OrderConflict):
        _register(ledger, no, "P8")
    order = ledger.order(no)
    assert (order.registered, order.provider_order_no) == (False, "P7")
    assert _register(ledger, no, "P7") is True


def test_a_late_registration_fills_in_the_provider_order_no_the_callback_had_not(
    ledger: Ledger,
) -> None:
    """A callback without a provider order number created the order; the registration naming
    P5 fills it in, so its identical repeat is the same request (200) and one without it is
    not (409)."""
    no = number()
    ledger.apply(event(no, no + "T"))
    assert _register(ledger, no, "P5") is True
    assert ledger.order(no).provider_order_no == "P5"
    assert _register(ledger, no, "P5") is False
    with pytest.raises(OrderConflict):
        _register(ledger, no)

def test_the_migration_marks_what_older_registrations_named(tmp_path: Path) -> None:
    """Orders registered before the column existed: one with a provider order number and no
    history can only have had it from its registration (marked); one whose number a callback
    may have filled in, or with none, is left unmarked (a repeat without it stays 200)."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0005")
    engine = make_engine(url)
    rows = [(1, "A", "P1"), (2, "B", "P2"), (3, "C", None)]
    with engine.begin() as connection:
        for order_id, no, provider_order_no in rows:
            connection.execute(text(
                "INSERT INTO orders (id, provider, account, merchant_order_no, provider_order_no,"
                " kind, status, amount_minor, currency, created_at, updated_at)"
                " VALUES (:id, 'opay', 'default', :no, :pno, 'payment', 'pending', 100, 'NGN',"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"),
                {"id": order_id, "no": no, "pno": provider_order_no})
        connection.execute(text(
            "INSERT INTO order_events (order_id, at, source, provider_status, status, outcome)"
            " VALUES (2, '2026-01-01 00:00:00', 'callback', 'PENDING', 'pending', 'applied')"))
    upgrade(url)
    with engine.connect() as connection:
        marked = {no: bool(flag) for no, flag in connection.execute(text(
            "SELECT merchant_order_no, provider_order_no_registered FROM orders"))}
    engine.dispose()
    assert marked == {"A": True, "B": False, "C": False}
