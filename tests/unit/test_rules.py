"""The ledger's status rules, money conversion and log redaction, as pure functions."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

import hypothesis.strategies as st
import pytest
from hypothesis import given

import payhook.masking
from ledger.apply import Incoming
from ledger.fields import EventError, check_fields
from ledger.money import format_minor, to_minor
from ledger.status import Kind, Outcome, Status, decide
from payhook.logs import redact
from payhook.masking import MASK, is_secret, mask_text

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


def test_redaction_masks_secrets_inside_lists() -> None:
    """A list (or tuple) of mappings is walked too: each secret-named member is masked."""
    event = redact(None, "", {"accounts": [{"secret_key": "s", "name": "a"}, "plain"],
                              "pairs": ({"token": "t"},)})
    assert event["accounts"] == [{"secret_key": MASK, "name": "a"}, "plain"]
    assert event["pairs"] == [{"token": MASK}]


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ('{"clientAuthKey":"11a9fe","version":"V1.0.1","data": {"sign" : "ab\\"c",'
         ' "amount":300.00, "partner_key":1234567890, "orderNo":"M1"}}',
         '{"clientAuthKey":"***","version":"V1.0.1","data": {"sign" : "***",'
         ' "amount":300.00, "partner_key":"***", "orderNo":"M1"}}'),
        ("a=1&partner_key=xyz&token=&b=2", "a=1&partner_key=***&token=***&b=2"),
        ("YOSIRZqt+/EQ==", "YOSIRZqt+/EQ=="),  # ciphertext: nothing named in it
        ('\ufeff{"clientAuthKey":"11a9fe","n":1}', '\ufeff{"clientAuthKey":"***","n":1}'),
        ('{"client\\u0041uthKey":"11a9fe","n":"\\u00e9\\/"}',
         '{"client\\u0041uthKey":"***","n":"\\u00e9\\/"}'),
        ('{"token": ["t1", {"k": "t2"}], "n": 1}', '{"token": "***", "n": 1}'),
        ('{"secret": {"a": "s1", "b": [1, "}"]}, "n": [{"sign": true}]}',
         '{"secret": "***", "n": [{"sign": "***"}]}'),
        ('{"sign":"a","sign":"b","x":-1.5e3}', '{"sign":"***","sign":"***","x":-1.5e3}'),
        ('{"data": {"token": [1, 2', '{"data": {"token": "***"'),  # truncated: scanned all the same
        ('{"a": "x", "client\\u0041uthKey": {"v": "s"}} trailing',
         '{"a": "x", "client\\u0041uthKey": "***"} trailing'),
        ("\ufeffsign=abc&n=1", "\ufeffsign=***&n=1"),
        ("client%41uthKey=abc&n=1", "client%41uthKey=***&n=1"),
        ("[" * 5000 + '{"token": "t"}' + "]" * 5000, "[" * 5000 + '{"token": "***"}' + "]" * 5000),
    ],
    ids=["json", "form", "ciphertext", "bom", "escaped_name", "array_value", "object_value",
         "repeated_name", "truncated_json", "json_then_garbage", "form_bom", "form_escaped_name",
         "deeper_than_a_parse"],
)
def test_body_masking_hides_secret_values_and_keeps_every_other_byte(body: str,
                                                                     shown: str) -> None:
    """A raw body as the API shows it: every secret-named JSON member (at any depth, whatever
    its value, its name spelled with escapes, after a byte-order mark, in text that only looks
    like JSON) and form field is masked; the rest of the text, spacing, escapes and numbers
    included, is exactly as received."""
    assert mask_text(body) == shown


_SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(
    allow_nan=False, allow_infinity=False)
_NAMES = st.sampled_from(["sign", "token", "clientAuthKey", "amount", "data", "n"]) | st.text(
    max_size=6)
_TREES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    _NAMES, inner, max_size=4), max_leaves=20)


def _masked(node: object) -> object:
    if isinstance(node, dict):
        return {k: MASK if is_secret(k) else _masked(v) for k, v in node.items()}
    return [_masked(v) for v in node] if isinstance(node, list) else node


@given(tree=_TREES, ascii_only=st.booleans(), indent=st.none() | st.integers(0, 2),
       separators=st.sampled_from([(",", ":"), (", ", ": "), (" , ", " : ")]))
def test_body_masking_matches_masking_the_parsed_document(
    tree: object, ascii_only: bool, indent: int | None, separators: tuple[str, str],
) -> None:
    """Whatever the document and however it is written, the masked text is the document with
    each secret-named member's value replaced by "***", written the same way."""
    def write(doc: object) -> str:
        return json.dumps(doc, ensure_ascii=ascii_only, indent=indent, separators=separators)

    assert mask_text(write(tree)) == write(_masked(tree))


def test_body_masking_falls_back_to_the_parsed_document(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the scan of the text miss a secret, a JSON body is shown re-serialised from its
    parsed form with every secret-named member masked, never with the secret."""
    monkeypatch.setattr(payhook.masking, "_member_values", lambda text: [])
    assert mask_text('{"n": 300, "data": {"token": ["t1"]}}') == (
        '{"n": 300, "data": {"token": "***"}}')


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
