"""Reading an order's history for the callbacks that wrote it: which of them reached the
ledger before (a replayed callback is processed again from its raw bytes)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from ledger.apply import OrderKey
from ledger.models import Order, OrderEvent
from ledger.status import Outcome, strongest


def reached_ledger(session: Session, claims: Mapping[int, OrderKey]) -> dict[int, str]:
    """The callback ids among `claims` (callback id → the order it names) with a history entry
    of their own on that order, each with the outcome it had there (`strongest` of its entries,
    as `ledger.apply` answers a replay the provider still confirms): each reached the ledger
    once already.

    One statement for all of them, found through the order's unique key and the history's
    order index (the history has no index on `callback_id`).
    """
    if not claims:
        return {}
    rows = session.execute(
        select(OrderEvent.callback_id, OrderEvent.outcome, Order.provider, Order.account,
               Order.merchant_order_no)
        .join(Order, Order.id == OrderEvent.order_id)
        .where(
            tuple_(Order.provider, Order.account, Order.merchant_order_no).in_(
                sorted(set(claims.values()))
            ),
            OrderEvent.callback_id.in_(sorted(claims)),
        )
    )
    outcomes: dict[int, list[Outcome]] = defaultdict(list)
    for cb, outcome, *key in rows:
        if claims.get(int(cb)) == tuple(key):
            outcomes[int(cb)].append(Outcome(outcome))
    return {cb: strongest(found).value for cb, found in outcomes.items()}
