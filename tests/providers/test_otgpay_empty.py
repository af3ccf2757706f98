"""An OTGPAY callback with no field at all is `malformed`, as an empty body is for the other
providers; a field set without a `sign` stays `bad_signature`."""

from __future__ import annotations

import pytest

from providers.base import Headers, RawCallback
from tests.providers.otgpay_setup import NOW, rejection

JSON, FORM = "application/json", "application/x-www-form-urlencoded"


def _reason(body: bytes, content_type: str | None) -> str:
    headers = Headers({"Content-Type": content_type} if content_type else {})
    return rejection(RawCallback(body, headers, NOW))


@pytest.mark.parametrize(("body", "content_type"), [
    (b"", None), (b"", JSON), (b"", FORM), (b"  \n", None), (b"{}", JSON), (b"{}", None),
    (b"&", FORM), (b"&&", None),
])
def test_a_callback_with_no_field_is_malformed(body: bytes, content_type: str | None) -> None:
    """Nothing to verify or read: `malformed`, not a signature that failed."""
    assert _reason(body, content_type) == "malformed"


@pytest.mark.parametrize(("body", "content_type"), [
    (b'{"orderId": "M1", "status": 2}', JSON), (b"orderId=M1&status=2", FORM),
    (b'{"orderId": "M1", "sign": "bm8="}', JSON),
])
def test_fields_without_a_valid_sign_stay_bad_signature(
    body: bytes, content_type: str | None,
) -> None:
    """A field set is judged by its signature first: without a valid one, `bad_signature`."""
    assert _reason(body, content_type) == "bad_signature"
