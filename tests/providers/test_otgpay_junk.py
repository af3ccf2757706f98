"""OTGPAY against junk: any bytes, JSON, form or signed junk values only raise `Rejected`."""

from __future__ import annotations

import contextlib
import json
from typing import Any
from urllib.parse import urlencode

from hypothesis import given, settings
from hypothesis import strategies as st

from providers.base import Headers, RawCallback
from providers.errors import Rejected
from sandbox.wire import otgpay as wire
from tests.providers.otgpay_setup import (
    ACCOUNT,
    ADAPTER,
    FIELDS,
    KEYS,
    NOW,
    RSA_PROPERTY,
    raw_callback,
)

CHEAP_PROPERTY = settings(max_examples=200, deadline=None, database=None)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


def _only_rejected(raw: RawCallback) -> None:
    with contextlib.suppress(Rejected):
        ADAPTER.parse_callback(raw, ACCOUNT)


@CHEAP_PROPERTY
@given(st.binary(max_size=300), st.sampled_from(["application/json", "", "x-www-form-urlencoded"]))
def test_arbitrary_bytes_only_reject(body: bytes, content_type: str) -> None:
    """Arbitrary bytes under any Content-Type never raise anything but Rejected."""
    _only_rejected(RawCallback(body, Headers({"Content-Type": content_type}), NOW))


@CHEAP_PROPERTY
@given(json_values)
def test_arbitrary_json_only_rejects(value: Any) -> None:
    """Arbitrary JSON never raises anything but Rejected."""
    body = json.dumps(value).encode()
    _only_rejected(RawCallback(body, Headers({"Content-Type": "application/json"}), NOW))


@CHEAP_PROPERTY
@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=6))
def test_arbitrary_forms_only_reject(fields: dict[str, str]) -> None:
    """Arbitrary form fields never raise anything but Rejected."""
    body = urlencode(fields).encode()
    _only_rejected(
        RawCallback(body, Headers({"Content-Type": "application/x-www-form-urlencoded"}), NOW)
    )


@RSA_PROPERTY
@given(st.fixed_dictionaries(dict.fromkeys(FIELDS, json_values), optional={"event": json_values}))
def test_signed_junk_values_only_reject(fields: dict[str, Any]) -> None:
    """Correctly signed callbacks with junk values never raise anything but Rejected."""
    try:
        request = wire.callback(KEYS, fields)
    except (TypeError, ValueError):  # what the platform's side itself cannot sign
        return
    _only_rejected(raw_callback(request))
