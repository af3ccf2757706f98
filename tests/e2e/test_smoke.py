"""The pipeline end to end with OPay: POST → inbox → Redis → worker → ledger → API."""

from __future__ import annotations

from tests.conftest import unique
from tests.harness import Stack


def test_signed_opay_callback_is_applied(stack: Stack) -> None:
    """A signed OPay success for a registered order is acknowledged, applied and credited."""
    order_no = unique()
    stack.register("opay", order_no, "300.00")
    fields = stack.world.fields("opay", order_no, "succeeded", "300.00")
    status, body, callback_id = stack.post(stack.world.callback("opay", fields))
    assert status == 200
    assert body == b'{"code":"00000","message":"SUCCESSFUL"}'
    assert callback_id is not None
    [record] = stack.wait_final([callback_id])
    assert record["state"] == "applied"
    order = stack.order("opay", order_no)
    assert order is not None
    assert order["status"] == "succeeded"
    assert order["paid_amount"] == "300.00"
