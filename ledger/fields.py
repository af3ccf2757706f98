"""What the ledger can store of a provider event: its strings fit their columns and PostgreSQL's
text, its amount is not negative. Checked before anything is written, so a bad event is refused
once (`EventError`, never retried) rather than failing every attempt at the database."""

from __future__ import annotations

from ledger.models import Order, ProviderEventSeen, column_width

# The provider's strings the ledger keeps, and the widths of the columns they go in (read from
# the models, so a migration that widens a column widens the check).
_WIDTHS = {
    "merchant_order_no": column_width(Order.merchant_order_no),
    "provider_order_no": column_width(Order.provider_order_no),
    "event_id": column_width(ProviderEventSeen.event_id),
    "provider_status": column_width(ProviderEventSeen.provider_status),
    "currency": column_width(Order.currency),
}


class EventError(ValueError):
    """An event the ledger cannot hold as it is: a field wider than its column, or with a NUL
    or a lone surrogate (never retryable; PostgreSQL would refuse the row on every attempt)."""


def check_fields(event: object) -> None:
    """Raise `EventError` if a provider string of `event` (an `Incoming`, or a provider event
    with the same field names) cannot be stored: wider than its column, or holding a NUL or a
    lone surrogate, which PostgreSQL's text refuses (SQLite would store them); or a negative
    amount, which would book a payment that takes money back."""
    amount = getattr(event, "amount", None)
    if amount is not None and amount < 0:
        raise EventError(f"amount {amount} is negative")
    for name, width in _WIDTHS.items():
        value: str | None = getattr(event, name)
        if value is None:
            continue
        if len(value) > width:
            raise EventError(f"{name} has {len(value)} characters; the ledger holds {width}")
        if not storable_text(value):
            raise EventError(f"{name} holds a NUL or a character UTF-8 cannot encode")


def storable_text(value: str) -> bool:
    """Whether PostgreSQL's text takes `value`: no NUL, and nothing UTF-8 cannot encode (a lone
    surrogate, which a JSON \\ud800 escape can carry)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
