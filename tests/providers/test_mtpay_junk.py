"""MTPay against junk: any bytes or JSON under any headers only raises `Rejected`, and any query
reply only a query error."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from providers.base import Headers, HttpReply, RawCallback
from providers.errors import QueryError, Rejected
from sandbox.wire import mtpay as wire
from tests.providers.mtpay_setup import ACCOUNT, ADAPTER, KEYS, NOW_MS, ORDER, PROPERTY, at

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
GOOD_HEADERS = wire.callback_request(KEYS, ORDER, NOW_MS).headers
HEADERS = st.dictionaries(
    st.sampled_from(["access_key", "timestamp", "signature"]) | st.text(), st.text()
) | st.just(dict(GOOD_HEADERS))
BODIES = st.fixed_dictionaries(
    {},
    optional={
        key: JSON | st.just(value) for key, value in {**ORDER, "updatedAt": "1699999999000"}.items()
    },
)


def _only_rejected(body: bytes, headers: dict[str, str]) -> None:
    raw = RawCallback(body=body, headers=Headers(headers), received_at=at(NOW_MS))
    with contextlib.suppress(Rejected):
        ADAPTER.parse_callback(raw, ACCOUNT)


@PROPERTY
@given(st.binary(), HEADERS)
def test_arbitrary_bytes_only_raise_rejected(body: bytes, headers: dict[str, str]) -> None:
    """Any byte string as a body, with any headers, either parses or raises Rejected."""
    _only_rejected(body, headers)


@PROPERTY
@given(JSON | BODIES, HEADERS)
def test_arbitrary_json_only_raises_rejected(value: Any, headers: dict[str, str]) -> None:
    """Any JSON value, or the right keys with junk values, either parses or raises Rejected."""
    _only_rejected(json.dumps(value).encode(), headers)


@PROPERTY
@given(st.binary() | (JSON | BODIES).map(lambda v: json.dumps(v).encode()), st.integers(100, 599))
def test_arbitrary_query_replies_only_raise_query_errors(body: bytes, status: int) -> None:
    """Any reply body and HTTP status either parses or raises a QueryError subclass."""
    with contextlib.suppress(QueryError):
        ADAPTER.parse_query_reply(ACCOUNT, HttpReply(status, body))
