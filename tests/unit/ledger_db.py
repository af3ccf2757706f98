"""A small driver for ledger tests on the session's real database: events in, rows out."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from ledger.apply import Applied, Incoming, apply_event
from ledger.db import make_engine, make_sessionmaker
from ledger.models import Journal, Order, OrderEvent, Payment, Posting
from ledger.orders import OrderSpec, register_order
from ledger.status import Kind, Status
from ledger.views import order_json, unbalanced_journals


def number(prefix: str = "L") -> str:
    return prefix + uuid.uuid4().hex[:12]


def event(no: str, event_id: str, status: Status = Status.SUCCEEDED, amount: str | None = "300.00",
          currency: str = "NGN", **extra: Any) -> Incoming:
    """An opay-like event; `provider_status` is the status's name."""
    return Incoming(provider="opay", account="default", merchant_order_no=no, event_id=event_id,
                    provider_status=status.name, status=status,
                    amount=None if amount is None else Decimal(amount), currency=currency,
                    source=extra.pop("source", "callback"), **extra)


class Ledger:
    """Each call is its own transaction, as a worker's or the API's would be."""

    def __init__(self, sessions: sessionmaker[Any]) -> None:
        self.sessions = sessions

    def apply(self, incoming: Incoming) -> Applied:
        with self.sessions.begin() as session:
            return apply_event(session, incoming, datetime.now(UTC))

    def register(self, no: str, kind: Kind = Kind.PAYMENT, amount: int = 30000,
                 currency: str = "NGN") -> bool:
        with self.sessions.begin() as session:
            spec = OrderSpec("opay", "default", no, kind, amount, currency)
            return register_order(session, spec, datetime.now(UTC))[1]

    def order(self, no: str) -> Order:
        with self.sessions() as session:
            found: Order = session.execute(
                select(Order).where(Order.merchant_order_no == no)).scalar_one()
            return found

    def json(self, no: str) -> dict[str, Any]:
        with self.sessions() as session:
            return order_json(session, self.order(no))

    def legs(self, no: str) -> dict[tuple[str, str], int]:
        """The order's postings summed per (ledger account, currency), zero sums left out."""
        with self.sessions() as session:
            rows = session.execute(
                select(Posting.ledger_account, Posting.currency, func.sum(Posting.amount_minor))
                .join(Journal, Journal.id == Posting.journal_id)
                .where(Journal.order_id == self.order(no).id)
                .group_by(Posting.ledger_account, Posting.currency)
            ).all()
            assert unbalanced_journals(session) == []
        return {(acct, cur): int(total) for acct, cur, total in rows if total}

    def count(self, no: str, table: type[Journal] | type[Payment] | type[OrderEvent]) -> int:
        with self.sessions() as session:
            return int(session.execute(
                select(func.count()).select_from(table)
                .where(table.order_id == self.order(no).id)).scalar_one())


@pytest.fixture(scope="module")
def ledger(database_url: str) -> Iterator[Ledger]:
    engine = make_engine(database_url)
    yield Ledger(make_sessionmaker(engine))
    engine.dispose()
