"""OPay against junk: any bytes, JSON, envelope or signed plaintext only raises `Rejected`, and
any query reply only a query error."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from providers.base import Headers, HttpReply, RawCallback
from providers.errors import QueryError, Rejected
from sandbox.wire import opay as wire
from tests.providers.opay_setup import ACCOUNT, ADAPTER, KEYS, NOW_MS, ORDER, PROPERTY, at


def _junk_raw(body: bytes, headers: dict[str, str] | None = None) -> RawCallback:
    return RawCallback(body=body, headers=Headers(headers or {}), received_at=at(NOW_MS + 1234))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
B64 = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
ENVELOPES = st.fixed_dictionaries(
    {
        "clientAuthKey": JSON | st.just(KEYS.client_auth_key),
        "timestamp": JSON | st.just(str(NOW_MS)),
        "paramContent": JSON | B64,
        "sign": JSON | B64,
    },
    optional={"version": JSON, "bodyFormat": JSON},
)
PLAINS = st.fixed_dictionaries({"data": JSON | st.dictionaries(st.sampled_from(list(ORDER)), JSON)})
HEADER_NAMES = st.sampled_from(["X-Opay-Tranid", "timestamp", "clientAuthKey"]) | st.text()
HEADERS = st.dictionaries(HEADER_NAMES, st.text())


def _only_rejected(body: bytes, headers: dict[str, str] | None = None) -> None:
    with contextlib.suppress(Rejected):
        ADAPTER.parse_callback(_junk_raw(body, headers), ACCOUNT)


@PROPERTY
@given(st.binary())
def test_arbitrary_bytes_only_raise_rejected(body: bytes) -> None:
    """Any byte string as a body either parses or raises Rejected, nothing else."""
    _only_rejected(body)


@PROPERTY
@given(JSON, HEADERS)
def test_arbitrary_json_only_raises_rejected(value: Any, headers: dict[str, str]) -> None:
    """Any JSON value as a body, with any headers, either parses or raises Rejected."""
    _only_rejected(json.dumps(value).encode(), headers)


@PROPERTY
@given(ENVELOPES | PLAINS, HEADERS)
def test_right_keys_junk_values_only_raise_rejected(
    body: dict[str, Any], headers: dict[str, str]
) -> None:
    """Envelopes with the right keys and junk values either parse or raise Rejected."""
    _only_rejected(json.dumps(body).encode(), headers)


@PROPERTY
@given(st.binary() | JSON.map(lambda v: json.dumps(v).encode()), st.integers(100, 599))
def test_arbitrary_query_replies_only_raise_query_errors(body: bytes, status: int) -> None:
    """Any reply body and HTTP status either parses or raises a QueryError subclass."""
    with contextlib.suppress(QueryError):
        ADAPTER.parse_query_reply(ACCOUNT, HttpReply(status, body))


JUNK_ORDERS = JSON | st.fixed_dictionaries(
    {}, optional={key: JSON | st.just(value) for key, value in ORDER.items()}
)


@PROPERTY
@given(JUNK_ORDERS)
def test_signed_junk_plaintext_only_raises_rejected(plaintext: Any) -> None:
    """Correctly signed and encrypted junk plaintext either parses or raises Rejected."""
    timestamp = str(NOW_MS)
    param_content = wire.encrypt(KEYS.merchant_public_key, json.dumps(plaintext).encode())
    body = {
        "clientAuthKey": KEYS.client_auth_key,
        "timestamp": timestamp,
        "paramContent": param_content,
        "sign": wire.sign(KEYS.provider_private_key, param_content + timestamp),
    }
    _only_rejected(json.dumps(body).encode())
