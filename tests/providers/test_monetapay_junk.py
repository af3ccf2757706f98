"""MonetaPay against junk: any bytes, JSON, signed or decrypted junk only raises `Rejected`."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from providers.base import HttpRequest, RawCallback
from providers.errors import Rejected
from sandbox.wire import monetapay as wire
from tests.providers.monetapay_setup import (
    ACCOUNT,
    ADAPTER,
    KEYS,
    PROPERTY,
    RECORD,
    TIMESTAMP,
    raw_callback,
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


def _body_raw(body: bytes) -> RawCallback:
    return raw_callback(
        HttpRequest("POST", "/callbacks/monetapay", {"Content-Type": "application/json"}, body)
    )


def _only_rejected(raw: RawCallback) -> None:
    with contextlib.suppress(Rejected):
        ADAPTER.parse_callback(raw, ACCOUNT)


@PROPERTY
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_reject(body: bytes) -> None:
    """Arbitrary bytes never raise anything but Rejected."""
    _only_rejected(_body_raw(body))


@PROPERTY
@given(
    json_values | st.fixed_dictionaries({"data": st.fixed_dictionaries({"en_data": json_values})})
)
def test_arbitrary_json_only_rejects(value: Any) -> None:
    """Arbitrary JSON, including a data.en_data of any type, never raises anything but Rejected."""
    _only_rejected(_body_raw(json.dumps(value).encode()))


@PROPERTY
@given(st.fixed_dictionaries(dict.fromkeys(RECORD, json_values), optional={"extra": json_values}))
def test_signed_junk_values_only_reject(record: dict[str, Any]) -> None:
    """Correctly encrypted and signed records with junk values never raise anything but Rejected."""
    _only_rejected(raw_callback(wire.callback(KEYS, record, TIMESTAMP)))


@PROPERTY
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_decrypted_junk_objects_only_reject(record: dict[str, Any]) -> None:
    """Any object inside a valid ciphertext, signed or not, never raises anything but Rejected."""
    en_data = wire.encrypt(KEYS, wire.php_json(record))
    _only_rejected(_body_raw(json.dumps({"data": {"en_data": en_data}}).encode()))
