"""The exception tree, grouped by what the caller must do: store, retry, or refuse to start."""

from __future__ import annotations

#: The longest provider error code payhook keeps (`QueryError.safe_code`).
CODE_LIMIT = 48


def printable(text: str, limit: int) -> str:
    """`text` in visible ASCII only (anything else, spaces included, as `?`), at most `limit`
    characters."""
    return "".join(c if " " < c <= "~" else "?" for c in text[:limit])


class PayhookError(Exception):
    """Root of every error payhook raises on purpose."""


class Rejected(PayhookError):
    """Raised when a callback is final-bad: stored as `rejected` with `reason`, never retried."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Transient(PayhookError):
    """Raised when trying again later may succeed (network, busy provider, database blip)."""


class ConfigError(PayhookError):
    """Raised at start-up when configuration is invalid; the message names file, table and key."""


class QueryError(PayhookError):
    """Raised by a status-query client; the subclass says what the caller must do."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code

    @property
    def safe_code(self) -> str:
        """`code` fit to store and report: it is the provider's text, and a NUL in it would fail
        a shared write (PostgreSQL refuses it), a megabyte of it bloat every report."""
        return printable(self.code, CODE_LIMIT)


class QueryTransient(QueryError, Transient):
    """Raised when the provider is busy, unreachable or answered 5xx: retry later with backoff."""


class QueryRefused(QueryTransient):
    """Raised when a query's retry was not sent: its turn in the pace or its unit of the shared
    query budget was not to be had in time. `code` is the provider's last failure, but it is
    the budget that ended the query."""


class QueryNotFound(QueryError):
    """Raised when the provider says it does not know the order."""


class QueryAuth(QueryError):
    """Raised when the provider refuses our credentials or signature: an operator must act."""


class QueryPermanent(QueryError):
    """Raised when the provider answered something we cannot use and retrying will not help."""
