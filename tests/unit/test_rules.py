"""The ledger's status rules, money conversion and log redaction, as pure functions."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ledger.money import format_minor, to_minor
from ledger.status import Kind, Outcome, Status, decide
from payhook.logs import MASK, redact

S = Status


@pytest.mark.parametrize(
    ("current", "incoming", "outcome", "new", "flags", "money"),
    [
        (S.PENDING, S.SUCCEEDED, Outcome.APPLIED, S.SUCCEEDED, (), True),
        (S.PENDING, S.FAILED, Outcome.APPLIED, S.FAILED, (), False),
        (S.PENDING, S.PENDING, Outcome.APPLIED, None, (), False),
        (S.SUCCEEDED, S.PENDING, Outcome.STALE, None, (), False),
        (S.SUCCEEDED, S.SUCCEEDED, Outcome.DUPLICATE, None, (), False),
        (S.FAILED, S.SUCCEEDED, Outcome.APPLIED, S.SUCCEEDED, ("late_success",), True),
        (S.CLOSED, S.SUCCEEDED, Outcome.APPLIED, S.SUCCEEDED, ("late_success",), True),
        (S.SUCCEEDED, S.FAILED, Outcome.CONFLICT, None, ("conflicting_status",), False),
        (S.SUCCEEDED, S.CANCELLED, Outcome.CONFLICT, None, ("conflicting_status",), False),
        (S.FAILED, S.CLOSED, Outcome.CONFLICT, None, ("conflicting_status",), False),
    ],
)
def test_transitions(current: Status, incoming: Status, outcome: Outcome, new: Status | None,
                     flags: tuple[str, ...], money: bool) -> None:
    """Each CONTRACT §5 transition gives its outcome, new status, flags and money movement."""
    decision = decide(current, incoming)
    assert (decision.outcome, decision.new_status, decision.flags, decision.moves_money) == (
        outcome, new, flags, money)


def test_static_va_stays_open() -> None:
    """A static VA repayment moves money but never closes the VA."""
    decision = decide(S.PENDING, S.SUCCEEDED, Kind.STATIC_VA)
    assert (decision.new_status, decision.moves_money) == (None, True)


@pytest.mark.parametrize(("amount", "currency", "minor"),
                         [("300.00", "NGN", 30000), ("50000", "IDR", 5000000),
                          (Decimal("0.01"), "CNY", 1), ("1200", "JPY", 1200)])
def test_money_round_trips_exactly(amount: str, currency: str, minor: int) -> None:
    """Amounts become exact minor units and format back to the currency's unit."""
    assert to_minor(amount, currency) == minor
    assert Decimal(format_minor(minor, currency)) == Decimal(amount)


@pytest.mark.parametrize("bad", ["1.001", "NaN", "Infinity", "abc"])
def test_money_refuses_inexact_amounts(bad: str) -> None:
    """An amount finer than the currency allows, or not a number, is refused."""
    with pytest.raises(ValueError, match=r"amount|decimals"):
        to_minor(bad, "NGN")


def test_redaction_masks_secrets_at_any_depth() -> None:
    """Fields named like secrets are masked, nested ones too; others are kept."""
    event = redact(None, "", {"event": "x", "client_auth_key": "k", "password": "p",
                              "nested": {"api_secret": "s", "order": "M1"}, "order": "M1"})
    assert event["client_auth_key"] == event["password"] == MASK
    assert event["nested"] == {"api_secret": MASK, "order": "M1"}
    assert event["order"] == "M1"
