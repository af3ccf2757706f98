"""The ledger's status rules, money conversion and log redaction, as pure functions."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from ledger.apply import EventError, Incoming, check_fields
from ledger.money import format_minor, to_minor
from ledger.status import Kind, Outcome, Status, decide
from payhook.logs import MASK, mask_text, redact

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


@pytest.mark.parametrize(
    ("repayment", "incoming", "outcome", "flags", "money"),
    [
        (S.PENDING, S.SUCCEEDED, Outcome.APPLIED, (), True),
        (S.PENDING, S.FAILED, Outcome.APPLIED, (), False),
        (S.SUCCEEDED, S.FAILED, Outcome.CONFLICT, ("conflicting_status",), False),
        (S.FAILED, S.SUCCEEDED, Outcome.APPLIED, ("late_success",), True),
        (S.SUCCEEDED, S.PENDING, Outcome.STALE, (), False),
    ],
)
def test_static_va_repayments_follow_the_rules_and_the_va_stays_open(
    repayment: S, incoming: S, outcome: Outcome, flags: tuple[str, ...], money: bool
) -> None:
    """Each repayment of a static VA follows CONTRACT §5 from its own status (a success later
    reported failed is a conflict, not silently applied); the VA itself never closes."""
    decision = decide(repayment, incoming, Kind.STATIC_VA)
    assert (decision.outcome, decision.new_status, decision.flags, decision.moves_money) == (
        outcome, None, flags, money)


@pytest.mark.parametrize(("amount", "currency", "minor"),
                         [("300.00", "NGN", 30000), ("50000", "IDR", 5000000),
                          (Decimal("0.01"), "CNY", 1), ("1200", "JPY", 1200),
                          ("92233720368547758.07", "NGN", 2**63 - 1),
                          ("5." + "0" * 5000, "NGN", 500), ("0E-99999", "NGN", 0),
                          ("1.2E+3", "JPY", 1200)])
def test_money_round_trips_exactly(amount: str, currency: str, minor: int) -> None:
    """Amounts become exact minor units and format back to the currency's unit."""
    assert to_minor(amount, currency) == minor
    assert Decimal(format_minor(minor, currency)) == Decimal(amount)


@pytest.mark.parametrize("bad", ["1.001", "NaN", "Infinity", "abc", "1e30",
                                 "-92233720368547758.08", "1e999999999", "1e-9999999999",
                                 "1." + "0" * 60 + "1", "2" + "0" * 5000])
def test_money_refuses_inexact_amounts(bad: str) -> None:
    """An amount finer than the currency allows, not a number, or beyond the ledger's BIGINT
    minor units, is refused, whatever its exponent or length: never rounded to a whole amount
    or to 0, never an arithmetic error."""
    with pytest.raises(ValueError, match=r"amount|decimals"):
        to_minor(bad, "NGN")


def test_redaction_masks_secrets_at_any_depth() -> None:
    """Fields named like secrets are masked, nested ones too; others are kept."""
    event = redact(None, "", {"event": "x", "client_auth_key": "k", "password": "p",
                              "nested": {"api_secret": "s", "order": "M1"}, "order": "M1"})
    assert event["client_auth_key"] == event["password"] == MASK
    assert event["nested"] == {"api_secret": MASK, "order": "M1"}
    assert event["order"] == "M1"


def test_body_masking_hides_secret_fields_and_keeps_every_other_byte() -> None:
    """A raw body as the API shows it: secret-named JSON members (at any depth, string or
    number) and form fields are masked; the rest of the text, spacing and numbers included, is
    exactly as received."""
    body = ('{"clientAuthKey":"11a9fe","version":"V1.0.1","data": {"sign" : "ab\\"c",'
            ' "amount":300.00, "partner_key":1234567890, "orderNo":"M1"}}')
    assert mask_text(body) == (
        '{"clientAuthKey":"***","version":"V1.0.1","data": {"sign" : "***",'
        ' "amount":300.00, "partner_key":"***", "orderNo":"M1"}}')
    assert mask_text("a=1&partner_key=xyz&token=&b=2") == "a=1&partner_key=***&token=***&b=2"
    assert mask_text("YOSIRZqt+/EQ==") == "YOSIRZqt+/EQ=="  # ciphertext: nothing named in it



def test_the_ledger_refuses_a_negative_amount_whatever_the_adapter_let_through() -> None:
    """The ledger's own gate (every callback and poll passes it) refuses a negative amount;
    zero and positive amounts pass."""
    event = Incoming(provider="opay", account="default", merchant_order_no="M1", event_id="E1",
                     status=Status.SUCCEEDED, provider_status="SUCCESS", amount=Decimal("-1"),
                     currency="NGN", source="callback")
    with pytest.raises(EventError, match="negative"):
        check_fields(event)
    for amount in (Decimal("0"), Decimal("-0"), Decimal("1.00")):
        check_fields(replace(event, amount=amount))
