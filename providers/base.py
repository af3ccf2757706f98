"""The provider interface: raw callback in, canonical event out, the ack, and the status query.

The order unwrap → authenticate → open (decrypt + inner checks) → interpret lives once, in
`BaseProvider.parse_callback`; each provider supplies only the four hooks.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from providers import urls
from providers.errors import QueryAuth, QueryPermanent, QueryTransient, Rejected


class Status(StrEnum):
    """The canonical order status; every status but `pending` is terminal."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CLOSED = "closed"
    CANCELLED = "cancelled"


class Trust(StrEnum):
    """Whether a verified callback is applied as it says, or only triggers a status query."""

    SIGNATURE = "signature"
    CONFIRM_BY_QUERY = "confirm_by_query"


class OrderKind(StrEnum):
    """What an order is: money in, money out, or a static virtual account with many repayments."""

    PAYMENT = "payment"
    PAYOUT = "payout"
    STATIC_VA = "static_va"


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only view of request headers (the first value of a repeated name)."""

    def __init__(self, pairs: Mapping[str, str] | list[tuple[str, str]]) -> None:
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        self._data: dict[str, str] = {}
        for name, value in items:
            self._data.setdefault(name.lower(), value)

    def __getitem__(self, key: str) -> str:
        return self._data[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True)
class RawCallback:
    """One stored HTTP request exactly as received; `received_at` is aware UTC."""

    body: bytes
    headers: Headers
    received_at: datetime
    remote: str | None = None


@dataclass(frozen=True)
class ProviderEvent:
    """A verified provider statement about one order, in canonical terms.

    `event_id` is the provider's id for this event (the dedupe key together with
    provider, account and `provider_status`). `amount` is what this event says was paid,
    in the currency's unit (Decimal, exact). `flags` are review reasons the provider's
    own status implies (e.g. `partial_payment`). `fields` is the decoded plaintext as sent.
    """

    merchant_order_no: str
    event_id: str
    provider_status: str
    status: Status
    amount: Decimal | None
    currency: str | None
    provider_order_no: str | None = None
    paid_at: datetime | None = None
    kind: OrderKind | None = None
    flags: tuple[str, ...] = ()
    trust: Trust = Trust.SIGNATURE
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ack:
    """The HTTP answer a provider expects once its callback is safely stored."""

    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class OrderRef:
    """What a status query needs to know about an order."""

    merchant_order_no: str
    provider_order_no: str | None = None
    kind: OrderKind = OrderKind.PAYMENT


@dataclass(frozen=True)
class HttpRequest:
    """A fully built outgoing request (deterministic, so it can be compared with vectors)."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class HttpReply:
    """What the provider answered."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class QueryTransport(Protocol):
    """Sends a query for one account with timeouts, retries with jitter and its rate limit.

    The caller hands the adapter a transport bound to the account (so the rate-limit bucket
    is the account's). Raises `QueryTransient` for network errors, timeouts and HTTP 5xx/429
    once retries are spent; any other HTTP status is returned for the adapter to map.
    """

    async def send(self, request: HttpRequest) -> HttpReply: ...


#: One step of a per-order poll backoff, in seconds. Zero or less would query the order at
#: every pass; a step past the 7-day give-up age (CONTRACT §6) would only postpone its
#: `unresolved` flag (and a huge one overflows the next poll's date).
BackoffStep = Annotated[int, Field(gt=0, le=7 * 86400)]
#: A per-order poll backoff: at least one step, the last one repeating.
BackoffSchedule = Annotated[tuple[BackoffStep, ...], Field(min_length=1)]


class AccountConfig(BaseModel):
    """Settings every provider account takes (CONTRACT §2); providers subclass it."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    base_url: str
    timestamp_tolerance_s: int = Field(default=300, ge=0)
    stale_after_s: int = Field(default=900, ge=0)
    query_rate_per_s: float = Field(default=5.0, gt=0)
    trust: Trust | None = None
    # Reconciliation's per-order backoff between status queries; None: the service default
    # (5 min, 15 min, 1 h, 6 h, 24 h).
    poll_backoff_s: BackoffSchedule | None = None

    _base_url = field_validator("base_url")(urls.base_url)


A = TypeVar("A", bound=AccountConfig)
E = TypeVar("E")


class Provider(Protocol):
    """What the pipeline needs from a provider module."""

    name: ClassVar[str]
    account_model: ClassVar[type[AccountConfig]]
    default_trust: ClassVar[Trust]
    ack: ClassVar[Ack]

    def parse_callback(self, raw: RawCallback, account: Any) -> ProviderEvent:
        """Decode and verify one callback, or raise `Rejected(reason)`."""
        ...

    def build_query(self, account: Any, order: OrderRef, now_ms: int) -> HttpRequest:
        """The status-query request for `order` at time `now_ms`."""
        ...

    def parse_query_reply(self, account: Any, reply: HttpReply) -> list[ProviderEvent]:
        """Decode and verify a query reply, or raise a `QueryError` subclass."""
        ...

    async def query(
        self, transport: QueryTransport, account: Any, order: OrderRef, now_ms: int
    ) -> list[ProviderEvent]:
        """Ask the provider about `order`; the events it reports, verified."""
        ...


class BaseProvider(Generic[A, E]):
    """Owns the callback flow; a provider fills in the hooks below.

    `E` is the provider's envelope type: what `unwrap` parses from the raw request without
    any cryptography. Any `KeyError`/`ValueError`/`TypeError`/`UnicodeError` escaping a hook is
    turned into `Rejected("malformed")`, so untrusted input can never crash a worker.
    """

    name: ClassVar[str]
    account_model: ClassVar[type[AccountConfig]]
    default_trust: ClassVar[Trust] = Trust.SIGNATURE
    ack: ClassVar[Ack]

    def parse_callback(self, raw: RawCallback, account: A) -> ProviderEvent:
        try:
            envelope = self.unwrap(raw)
            self.authenticate(envelope, raw, account)
            fields = self.open(envelope, account)
            return self.interpret(fields, envelope, account)
        except Rejected:
            raise
        except (KeyError, ValueError, TypeError, UnicodeError, binascii.Error, ArithmeticError,
                RecursionError) as exc:
            raise Rejected("malformed", type(exc).__name__) from exc

    # -- hooks ------------------------------------------------------------------------------
    def unwrap(self, raw: RawCallback) -> E:
        """Parse the outer request (JSON/form, headers) into the envelope; no crypto."""
        raise NotImplementedError

    def authenticate(self, envelope: E, raw: RawCallback, account: A) -> None:
        """Checks that need no decryption (keys, timestamps, outer signatures); raise Rejected."""

    def open(self, envelope: E, account: A) -> Mapping[str, Any]:
        """Decrypt and run checks on the plaintext (inner signatures); the decoded fields."""
        raise NotImplementedError

    def interpret(self, fields: Mapping[str, Any], envelope: E, account: A) -> ProviderEvent:
        """Map decoded fields to the canonical event."""
        raise NotImplementedError

    # -- queries ------------------------------------------------------------------------------
    def build_query(self, account: A, order: OrderRef, now_ms: int) -> HttpRequest:
        raise NotImplementedError

    def parse_query_reply(self, account: A, reply: HttpReply) -> list[ProviderEvent]:
        raise NotImplementedError

    async def query(
        self, transport: QueryTransport, account: A, order: OrderRef, now_ms: int
    ) -> list[ProviderEvent]:
        request = self.build_query(account, order, now_ms)
        reply = await transport.send(request)
        return self.parse_query_reply(account, reply)


def load_json_object(body: bytes) -> dict[str, Any]:
    """Parse a JSON object from untrusted bytes, or raise `Rejected("malformed")`."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, huge ints
        raise Rejected("malformed", "body is not UTF-8 JSON") from exc
    if not isinstance(value, dict):
        raise Rejected("malformed", "body is not a JSON object")
    return value


def reply_object(reply: HttpReply) -> dict[str, Any]:
    """A query reply's JSON object, or the `QueryError` its HTTP status or bytes call for.

    429/5xx are transient and 401/403 are ours to fix (credentials, keys, clock). Otherwise
    providers put their error codes in the body whatever the HTTP status, so any parseable
    object is returned for the adapter to read.
    """
    if reply.status == 429 or reply.status >= 500:
        raise QueryTransient(f"HTTP {reply.status}", code=str(reply.status))
    if reply.status in (401, 403):
        raise QueryAuth(f"HTTP {reply.status}", code=str(reply.status))
    try:
        return load_json_object(reply.body)
    except Rejected as exc:
        raise QueryPermanent(f"HTTP {reply.status}, unparseable reply",
                             code=str(reply.status)) from exc
