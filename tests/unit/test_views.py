"""The read models against the session's real database: a callback listing reads only the
columns of its summaries; an order shows each payment in its own currency."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert
from sqlalchemy.orm import Session

from ledger.db import make_engine
from ledger.models import Callback
from ledger.views import list_callbacks
from tests.unit.ledger_db import Ledger, ledger, number
from tests.unit.ledger_db import event as ledger_event

__all__ = ["ledger"]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = make_engine(database_url)
    yield made
    made.dispose()


def test_a_callback_listing_reads_no_body_nor_headers(engine: Engine) -> None:
    """`GET /api/callbacks?limit=1000` lists summaries: one query that selects neither the
    bodies nor the headers (a 64 KiB body per row cost a 65 MiB peak for a 200 KB answer), and
    no query per row for them afterwards."""
    provider = f"t{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(Callback), [
            {"provider": provider, "account": "default", "received_at": now,
             "remote_addr": None, "headers": '[["X-Big", "' + "h" * 1000 + '"]]',
             "body": b"b" * 65536, "state": "received", "attempts": 0} for _ in range(3)
        ])
    statements: list[str] = []

    def sent(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", sent)
    try:
        with Session(engine) as session:
            listed = list_callbacks(session, state=None, provider=provider, limit=1000)
    finally:
        event.remove(engine, "before_cursor_execute", sent)
    assert [c["provider"] for c in listed] == [provider] * 3
    assert listed[0]["id"] > listed[1]["id"] > listed[2]["id"]
    assert listed[0]["received_at"] is not None
    [select] = [s for s in statements if "callbacks" in s]
    assert "callbacks.id" in select
    assert "callbacks.body" not in select
    assert "callbacks.headers" not in select


def test_a_payment_in_another_currency_is_shown_in_its_own(ledger: Ledger) -> None:
    """A 300 JPY payment on a 300.00 NGN order is listed as "300" JPY (not "3.00"); the paid
    amount, in NGN, counts none of it, and the order is flagged `currency_mismatch`."""
    no = number()
    ledger.register(no, amount=30000, currency="NGN")
    ledger.apply(ledger_event(no, no + "T", amount="300", currency="JPY"))
    body = ledger.json(no)
    assert [p["amount"] for p in body["payments"]] == ["300"]
    assert [p["currency"] for p in body["payments"]] == ["JPY"]
    assert (body["status"], body["paid_amount"], body["currency"]) == ("succeeded", "0.00", "NGN")
    assert body["review_reasons"] == ["currency_mismatch"]


def test_a_foreign_payment_booked_before_registration_is_not_counted_in_it(
    ledger: Ledger,
) -> None:
    """A 300 JPY callback creates the order in JPY; the merchant then registers it in NGN: the
    payment stays "300" JPY and the NGN paid amount is 0.00, flagged `currency_mismatch`."""
    no = number()
    ledger.apply(ledger_event(no, no + "T", amount="300", currency="JPY"))
    ledger.register(no, amount=30000, currency="NGN")
    body = ledger.json(no)
    assert [p["amount"] for p in body["payments"]] == ["300"]
    assert [p["currency"] for p in body["payments"]] == ["JPY"]
    assert (body["paid_amount"], body["currency"]) == ("0.00", "NGN")
    assert body["review_reasons"] == ["unregistered_order", "currency_mismatch"]


def test_a_payment_in_the_order_currency_names_it(ledger: Ledger) -> None:
    """The common case: the payment's entry carries the order's currency, and counts."""
    no = number()
    ledger.register(no, amount=30000, currency="NGN")
    ledger.apply(ledger_event(no, no + "T"))
    body = ledger.json(no)
    assert [(p["amount"], p["currency"]) for p in body["payments"]] == [("300.00", "NGN")]
    assert (body["paid_amount"], body["review_reasons"]) == ("300.00", [])
