"""Posting a provider's callback to the stack, checking the provider's exact acknowledgement."""

from __future__ import annotations

from typing import Any

from tests.harness import Stack

ACKS = {
    "opay": b'{"code":"00000","message":"SUCCESSFUL"}',
    "monetapay": b'{"code":0,"message":"success"}',
    "otgpay": b"SUCCESS",
    "mtpay": b'{"data":null,"isSuccess":true,"statusCode":"SUCCESS","message":"","version":"2.0"}',
}


def post(stack: Stack, provider: str, fields: dict[str, Any], **kwargs: Any) -> int:
    """Post one callback; its stored id, asserting the provider's exact acknowledgement."""
    code, body, callback_id = stack.post(stack.world.callback(provider, fields, **kwargs))
    assert (code, body) == (200, ACKS[provider])
    assert callback_id is not None
    return callback_id
