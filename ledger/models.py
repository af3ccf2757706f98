"""The schema: the callback inbox, orders and their history, event dedupe, payments, postings, runs.

Idempotency lives in unique constraints, so correctness does not rest on any process-local lock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute, Mapped, mapped_column

from ledger.status import Outcome

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY autoincrements.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCStamp(TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out, on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: payhook stores aware UTC only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Stamp = UTCStamp()


def column_width(column: InstrumentedAttribute[Any]) -> int:
    """The declared length of a String column: PostgreSQL refuses a longer value (SQLite does
    not), so what is checked against it is read from here and follows a migration that widens
    the column."""
    kind = column.property.columns[0].type
    assert isinstance(kind, String)
    assert kind.length is not None
    return kind.length

NON_FINAL = ("received", "processing")
# CONTRACT §5: where every stored callback ends: what its events did to the ledger, or not
# judged (`rejected`) or not processed (`dead`).
FINAL = (*(outcome.value for outcome in Outcome), "rejected", "dead")
_NON_FINAL_SQL = text("state IN ('received', 'processing')")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Callback(Base):
    """One HTTP callback exactly as received; ends in exactly one final state."""

    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(Stamp)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    headers: Mapped[str] = mapped_column(Text)  # JSON list of [name, value] pairs
    body: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16), server_default="received")
    reason: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    processed_at: Mapped[datetime | None] = mapped_column(Stamp)
    enqueued_at: Mapped[datetime | None] = mapped_column(Stamp)
    merchant_order_no: Mapped[str | None] = mapped_column(String(128))
    # When the running attempt started; cleared by the write that ends it. Set on a non-final
    # callback, it marks an attempt that never finished (its worker was killed, or still runs).
    claimed_at: Mapped[datetime | None] = mapped_column(Stamp)
    # The Celery task running that attempt. NULL beside `claimed_at` once the attempt is known
    # to be over without a verdict; another task's young claim is an attempt still running.
    claimed_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        # The sweeper's and the age gauge's query: only non-final rows, oldest first.
        Index(
            "ix_callbacks_unfinished",
            "received_at",
            postgresql_where=_NON_FINAL_SQL,
            sqlite_where=_NON_FINAL_SQL,
        ),
        Index("ix_callbacks_state_id", "state", "id"),
        Index("ix_callbacks_provider_id", "provider", "id"),
    )


class Order(Base):
    """An order the merchant expects (or one a callback told us about)."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    merchant_order_no: Mapped[str] = mapped_column(String(128))
    provider_order_no: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    paid_minor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    currency: Mapped[str] = mapped_column(String(3))
    needs_review: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    review_reasons: Mapped[str] = mapped_column(Text, server_default="[]")  # JSON list
    customer_phone: Mapped[str | None] = mapped_column(String(32))
    registered: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    # The registration named `provider_order_no` (rather than a callback filling it in): a
    # repeat that leaves it out then differs from the request.
    provider_order_no_registered: Mapped[bool] = mapped_column(
        Boolean, server_default=text("false")
    )
    created_at: Mapped[datetime] = mapped_column(Stamp)
    updated_at: Mapped[datetime] = mapped_column(Stamp)
    # Reconciliation: when the order is next due for a status query, and how many were made.
    next_poll_at: Mapped[datetime | None] = mapped_column(Stamp)
    poll_attempts: Mapped[int] = mapped_column(Integer, server_default="0")

    __table_args__ = (
        UniqueConstraint("provider", "account", "merchant_order_no"),
        # Due-order selection reads only pending orders, by due time: never a full scan.
        Index(
            "ix_orders_due",
            "next_poll_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )


class ProviderEventSeen(Base):
    """One row per distinct provider event: the dedupe key of CONTRACT §4."""

    __tablename__ = "provider_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(160))
    provider_status: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    created_at: Mapped[datetime] = mapped_column(Stamp)

    __table_args__ = (UniqueConstraint("provider", "account", "event_id", "provider_status"),)


class OrderEvent(Base):
    """One history entry per callback or poll that reached the ledger, whatever its outcome."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    at: Mapped[datetime] = mapped_column(Stamp)
    source: Mapped[str] = mapped_column(String(16))
    callback_id: Mapped[int | None] = mapped_column(BigInteger)
    provider_status: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str | None] = mapped_column(String(160))


class Payment(Base):
    """A money movement on an order: the one payment, or each static-VA repayment."""

    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    provider_txn_id: Mapped[str] = mapped_column(String(160))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    paid_at: Mapped[datetime | None] = mapped_column(Stamp)

    __table_args__ = (UniqueConstraint("order_id", "provider_txn_id"),)


class Journal(Base):
    """A balanced posting set: its postings sum to zero in one currency."""

    __tablename__ = "journal"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"))
    memo: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Stamp)


class Posting(Base):
    """One leg of a journal entry, in integer minor units (debit positive, credit negative)."""

    __tablename__ = "postings"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    journal_id: Mapped[int] = mapped_column(ForeignKey("journal.id"), index=True)
    ledger_account: Mapped[str] = mapped_column(String(128))
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_postings_account_currency", "ledger_account", "currency"),)


class ReconcileRun(Base):
    """One reconciliation pass and its stored report."""

    __tablename__ = "reconcile_runs"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    # When the pass started; while the run is `queued` (POST /api/reconcile), when it was queued.
    started_at: Mapped[datetime] = mapped_column(Stamp)
    finished_at: Mapped[datetime | None] = mapped_column(Stamp)
    state: Mapped[str] = mapped_column(String(16))  # queued, running, done, failed
    provider: Mapped[str | None] = mapped_column(String(32))
    account: Mapped[str | None] = mapped_column(String(64))
    report: Mapped[str] = mapped_column(Text, server_default="{}")  # JSON
    # The Celery task running the pass (NULL: a CLI pass). Redis redelivers a lost worker's
    # task under its id: that task takes over the run it left `running`; another's is a pass
    # still running elsewhere.
    claimed_by: Mapped[str | None] = mapped_column(String(64))

    # Every pass's stale-run sweep reads the few queued or running runs by age: a range of this
    # index, not a scan of a table that gains a row a minute. Every task's pass looks for the
    # run its task left first, by `claimed_by`.
    __table_args__ = (Index("ix_reconcile_runs_state_started_at", "state", "started_at"),
                      Index("ix_reconcile_runs_claimed_by", "claimed_by"))
