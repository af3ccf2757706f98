"""What a pass does when a query fails: the provider's reason is kept for the report, and one
order's or account's failure is its own, never the pass's."""

from __future__ import annotations

from tests.reconcile.conftest import Recon


def test_a_permanent_query_error_reports_the_providers_code_made_printable(
    recon: Recon,
) -> None:
    """A provider error that retrying will not cure is reported with the provider's own code
    (not the exception's class), only visible ASCII of it and bounded, whatever the provider
    sent."""
    recon.register("PE1")
    recon.mtpay.fail_with = "ORDER_LOCKED\x00\u00e9 " + "X" * 100
    recon.clock.advance(seconds=901)
    report = recon.pass_()
    assert report["state"] == "done"
    (error,) = report["errors"]["orders"]
    assert error["error"] == "permanent"
    assert error["code"] == "ORDER_LOCKED???" + "X" * 33
    assert recon.order("PE1").poll_attempts == 1
