"""Reconciliation passes through the real stack: a lost callback resolved by polling, and an
amount mismatch reported only where the ledger flags one."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import unique
from tests.harness import Stack, wait_for


def _reconcile(stack: Stack, provider: str) -> dict[str, Any]:
    """Once the orders just registered are stale, run a pass over `provider` through the API
    and wait for it to finish; the run, with its report, which must be `done`."""
    time.sleep(2.5)  # the stack's accounts have stale_after_s = 2
    status, run = stack.api("POST", "/api/reconcile", {"provider": provider})
    assert status == 202
    finished: dict[str, Any] = {}

    def done() -> bool:
        code, body = stack.api("GET", f"/api/reconcile/runs/{run['id']}")
        finished.update(body)
        return code == 200 and body["state"] in ("done", "failed")

    wait_for(done, 60, "the reconcile run")
    assert finished["state"] == "done"
    return finished


def test_lost_callback_is_resolved_by_a_reconcile_pass(stack: Stack) -> None:
    """An order whose callback never came is resolved by polling; the report names it."""
    order_no = unique("LOST")
    stack.register("opay", order_no, "300.00")
    stack.world.publish("opay", stack.world.fields("opay", order_no, "succeeded", "300.00"))
    report = _reconcile(stack, "opay")
    resolved = report["report"]["resolved_by_poll"]
    assert f"opay/default/{order_no}" in [o["order"] for o in resolved["orders"]], resolved
    order = stack.order("opay", order_no)
    assert order is not None
    assert order["status"] == "succeeded"
    assert [h["source"] for h in order["history"]] == ["poll"]
    assert report["report"]["ledger"]["balanced"] is True


@pytest.mark.parametrize(("status", "amount", "flag", "mismatch"),
                         [("partial", "200.00", "partial_payment", False),
                          ("succeeded", "250.00", "amount_mismatch", True)])
def test_a_poll_reports_an_amount_mismatch_only_where_the_ledger_flags_one(
    stack: Stack, status: str, amount: str, flag: str, mismatch: bool,
) -> None:
    """The pass report's amount mismatches agree with the order's review flags: a partial
    payment the provider declares (OTGPAY status 4) is `partial_payment`, not a mismatch; a
    payment that differs from the order without a word from the provider is both."""
    order_no = unique()
    stack.register("otgpay", order_no, "300.00")
    stack.world.publish("otgpay", stack.world.fields("otgpay", order_no, status, amount))
    report = _reconcile(stack, "otgpay")
    ref = f"otgpay/default/{order_no}"
    review = {o["order"]: o["reasons"] for o in report["report"]["needs_review"]["orders"]}
    assert review[ref] == [flag]
    mismatches = [m for m in report["report"]["mismatches"]["orders"] if m["order"] == ref]
    expected = [{"order": ref, "kind": "amount", "expected": "300.00", "got": amount}]
    assert mismatches == (expected if mismatch else [])
    order = stack.order("otgpay", order_no)
    assert order is not None
    assert (order["status"], order["review_reasons"]) == ("succeeded", [flag])
