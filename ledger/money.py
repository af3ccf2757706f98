"""Money at the edges: Decimal in a currency's unit ↔ integer minor units (ISO 4217 exponents)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# Exponents of the currencies our providers use; anything else defaults to 2.
_EXPONENTS = {"NGN": 2, "IDR": 2, "CNY": 2, "USD": 2, "EUR": 2, "JPY": 0, "KRW": 0, "VND": 0}


# Minor units are stored as BIGINT: an amount beyond it is no amount any provider pays.
_MAX_MINOR = 2**63 - 1


class AmountError(ValueError):
    """Raised for an amount that is not exact in the currency's minor units (never retryable)."""


def exponent(currency: str) -> int:
    """Digits after the decimal point in `currency`'s unit."""
    return _EXPONENTS.get(currency.upper(), 2)


def to_minor(amount: Decimal | str | int, currency: str) -> int:
    """Exact integer minor units; raises ValueError for amounts finer than the currency allows."""
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError) as exc:
        raise AmountError(f"not an amount: {amount!r}") from exc
    if not value.is_finite():
        raise AmountError(f"not an amount: {amount!r}")
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise AmountError(f"{amount} has more decimals than {currency} allows")
    if abs(scaled) > _MAX_MINOR:
        raise AmountError(f"{amount} {currency} is beyond any amount the ledger can hold")
    return int(scaled)


def format_minor(minor: int, currency: str) -> str:
    """The decimal string of `minor` units, e.g. 30000 NGN → "300.00"."""
    digits = exponent(currency)
    return f"{Decimal(minor).scaleb(-digits):.{digits}f}"
