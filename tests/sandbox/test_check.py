"""The end-of-run judge: how an order and its callbacks are held against the expectation."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from sandbox.check import judge, ledger_problems, states_match
from sandbox.client import CallbackView, OrderView
from sandbox.scenarios import Expected, Sent
from sandbox.traffic import FaultMix


def _expected(**changes: object) -> Expected:
    e = Expected("duplicate", "opay", "SB-1", "payment", Decimal("300.00"), "NGN",
                 status="succeeded", paid=Decimal("300.00"), payments=1,
                 sent=[Sent(1, "applied", 200), Sent(2, "duplicate", 200)], finished=True)
    for name, value in changes.items():
        setattr(e, name, value)
    return e


def _order(**changes: object) -> OrderView:
    values: dict[str, object] = {"status": "succeeded", "paid": Decimal("300.00"),
                                 "payments": 1, "review_reasons": frozenset(),
                                 "poll_applied": 0}
    values.update(changes)
    return OrderView(**values)  # type: ignore[arg-type]


VIEWS = {1: CallbackView(1, "duplicate", None), 2: CallbackView(2, "applied", None)}


def test_order_where_expected_is_ok() -> None:
    """Callback states are compared as a multiset: which duplicate won the race is free."""
    assert judge(_expected(), _order(), VIEWS).kind == "ok"


def test_second_payment_is_double_applied() -> None:
    """An order credited by more payments than expected counts as double applied."""
    verdict = judge(_expected(), _order(payments=2, paid=Decimal("600.00")), VIEWS)
    assert verdict.kind == "double"


def test_unfinished_callback_is_lost() -> None:
    """An acknowledged callback still being processed counts as lost."""
    views = {**VIEWS, 2: CallbackView(2, "processing", None)}
    assert judge(_expected(), _order(), views).kind == "lost"


def test_unresolved_lost_callback_order_is_lost() -> None:
    """A lost-callback order that no poll resolved is not where expected."""
    e = _expected(sent=[], by_poll=True)
    assert judge(e, _order(status="pending", paid=Decimal(0), payments=0), {}).kind == "lost"


def test_missing_flag_is_lost() -> None:
    """Review reasons must be exactly the expected flags."""
    assert judge(_expected(flags=frozenset({"late_success"})), _order(), VIEWS).kind == "lost"


def test_poll_first_turns_applied_into_duplicate() -> None:
    """A poll that applied the event first may turn one expected `applied` into `duplicate`."""
    sent = [Sent(1, "applied", 200), Sent(2, "stale", 200)]
    assert states_match(sent, Counter({"duplicate": 1, "stale": 1}), polled=1)
    assert not states_match(sent, Counter({"duplicate": 1, "stale": 1}), polled=0)


def test_pending_notice_may_be_stale_after_a_poll() -> None:
    """A pending notice overtaken by a poll's success is stale, only if a poll applied."""
    sent = [Sent(1, "applied", 200, after_poll="stale")]
    assert states_match(sent, Counter({"stale": 1}), polled=1)
    assert not states_match(sent, Counter({"stale": 1}), polled=0)


def test_ledger_receipts_compare_with_expected_sum() -> None:
    """Receipts moving more than the expected payments is reported as excess credit."""
    orders = [_expected()]
    key = ("receipts:opay/default", "NGN")
    assert ledger_problems(orders, {key: -100}, {key: -30100}) == (0, [])
    sign, messages = ledger_problems(orders, {}, {key: -60000})
    assert sign == 1
    assert messages


def test_fault_mix_parses_over_defaults() -> None:
    """`--faults` names override the default ratios; unknown names are refused."""
    assert FaultMix.parse("lost=0.2,duplicate=0").lost == pytest.approx(0.2)
    with pytest.raises(ValueError, match="unknown fault"):
        FaultMix.parse("gremlins=0.1")
