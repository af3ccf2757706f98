"""Due-order selection: claiming the pending orders whose next status query is due.

Reads only the partial index `ix_orders_due` (pending orders by `next_poll_at`). On PostgreSQL
rows are claimed with FOR UPDATE SKIP LOCKED and their due time is pushed forward by a lease in
the same transaction, so concurrent passes never claim the same order; on SQLite the writer
lock taken at BEGIN serialises claims to the same effect.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnClause, ColumnElement, Select, String, literal_column, select, update
from sqlalchemy.orm import Session

from ledger.models import Order

# A literal, never a bound parameter: a generic plan for `status = $1` could not prove the
# partial index's predicate, and SQLite matches partial-index predicates textually.
PENDING: ColumnClause[str] = literal_column("'pending'", String())


@dataclass(frozen=True)
class DueOrder:
    """A snapshot of one claimed order: what querying it and reporting on it need."""

    id: int
    provider: str
    account: str
    merchant_order_no: str
    provider_order_no: str | None
    kind: str
    amount_minor: int
    currency: str
    created_at: datetime
    poll_attempts: int

    @property
    def ref(self) -> str:
        return f"{self.provider}/{self.account}/{self.merchant_order_no}"


_COLUMNS = (
    Order.id,
    Order.provider,
    Order.account,
    Order.merchant_order_no,
    Order.provider_order_no,
    Order.kind,
    Order.amount_minor,
    Order.currency,
    Order.created_at,
    Order.poll_attempts,
)


def scoped(provider: str | None, account: str | None) -> list[ColumnElement[bool]]:
    """Filters on provider/account that leave the choice of index to `ix_orders_due`.

    `|| ''` hides the columns from the unique (provider, account, merchant_order_no) index,
    which SQLite would otherwise prefer, reading every order the account ever had.
    """
    where: list[ColumnElement[bool]] = []
    if provider is not None:
        where.append(Order.provider.concat("") == provider)
    if account is not None:
        where.append(Order.account.concat("") == account)
    return where


def due_query(
    now: datetime, limit: int, provider: str | None = None, account: str | None = None
) -> Select[tuple[int]]:
    """The ids of pending orders due at `now`, oldest due first, at most `limit`."""
    stmt = select(Order.id).where(
        Order.status == PENDING, Order.next_poll_at <= now, *scoped(provider, account)
    )
    return stmt.order_by(Order.next_poll_at).limit(limit)


def claim_due(
    session: Session,
    now: datetime,
    *,
    limit: int,
    lease_s: int,
    provider: str | None = None,
    account: str | None = None,
) -> list[DueOrder]:
    """Claim up to `limit` due orders: each is not due again until `now + lease_s`.

    The caller owns the transaction and should commit at once, which releases the row locks.
    """
    if limit <= 0:
        return []
    ids_stmt = due_query(now, limit, provider, account).with_for_update(skip_locked=True)
    ids = [int(i) for i in session.execute(ids_stmt).scalars()]
    if not ids:
        return []
    session.execute(
        update(Order)
        .where(Order.id.in_(ids))
        .values(next_poll_at=now + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    rows = session.execute(select(*_COLUMNS).where(Order.id.in_(ids))).all()
    by_id = {int(row.id): DueOrder(*row) for row in rows}
    return [by_id[i] for i in ids if i in by_id]


def bring_forward(
    session: Session, now: datetime, provider: str, account: str, *, limit: int,
    created_before: datetime, leased_until: datetime,
) -> int:
    """Make up to `limit` of an account's pending orders (created before `created_before`,
    not static VAs) due now, soonest due first; how many moved. Used when a provider is silent.
    Orders due no later than `leased_until` are left alone: a pass may hold them under its claim
    lease (and the rest are due soon anyway), and a second pass must not query them again.
    """
    ids_stmt = (
        select(Order.id)
        .where(
            Order.status == PENDING,
            Order.next_poll_at > leased_until,
            *scoped(provider, account),
            Order.created_at <= created_before,
            Order.kind != "static_va",
        )
        .order_by(Order.next_poll_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = [int(i) for i in session.execute(ids_stmt).scalars()]
    if ids:
        session.execute(
            update(Order)
            .where(Order.id.in_(ids))
            .values(next_poll_at=now)
            .execution_options(synchronize_session=False)
        )
    return len(ids)


def release(session: Session, ids: Iterable[int], *, leased_until: datetime, now: datetime) -> int:
    """Make claimed orders due again at `now` (a pass that stopped before answering them); how
    many. Only those still pending under that claim's lease (`leased_until`): an order a
    callback settled, or one another pass has claimed since, is left alone."""
    result = session.execute(
        update(Order)
        .where(Order.id.in_(list(ids)), Order.status == PENDING,
               Order.next_poll_at == leased_until)
        .values(next_poll_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
