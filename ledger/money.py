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
    """Exact integer minor units; raises ValueError for amounts finer than the currency allows.

    Integer arithmetic on the digits, never Decimal's context: its 28-digit precision would
    round a long amount to a whole one, and an extreme exponent ("1e-9999999999") would
    underflow to 0 or overflow instead of being refused."""
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError) as exc:
        raise AmountError(f"not an amount: {amount!r}") from exc
    if not value.is_finite():
        raise AmountError(f"not an amount: {amount!r}")
    sign, coefficient, exp = value.as_tuple()
    significant = "".join(map(str, coefficient)).rstrip("0")
    if not significant:
        return 0
    # The power of ten, in minor units, of the last significant digit.
    shift = int(exp) + len(coefficient) - len(significant) + exponent(currency)
    if shift < 0:
        raise AmountError(f"{str(amount)[:40]} has more decimals than {currency} allows")
    fits = len(significant) + shift <= len(str(_MAX_MINOR))  # else int() of 64 KiB of digits
    minor = int(significant) * pow(10, shift) if fits else _MAX_MINOR + 1
    if minor > _MAX_MINOR:
        raise AmountError(
            f"{str(amount)[:40]} {currency} is beyond any amount the ledger can hold")
    return -minor if sign else minor


def format_minor(minor: int, currency: str) -> str:
    """The decimal string of `minor` units, e.g. 30000 NGN → "300.00"."""
    digits = exponent(currency)
    return f"{Decimal(minor).scaleb(-digits):.{digits}f}"
