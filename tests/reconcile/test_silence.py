"""Provider silence: polling tightened and one SMS per incident, through the SSSMS88 stand-in."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest

from ledger.models import Callback
from reconcile.runner import run_pass
from reconcile.sms import SmsConfig
from sandbox.sms import SMS_SANDBOX, SmsSandbox, create_sms_app
from tests.reconcile.conftest import Recon
from tests.reconcile.harness import ThreadServer

USERNAME, PASSWORD = "merchant_user", "pw-Very-Secret-42"
API_KEY, API_SECRET = "AK-9f8e7d6c5b4a", "S3cretHmacKeyForTheSmsGateway0xDEADBEEF"


@pytest.fixture
def sms(recon: Recon) -> Iterator[SmsSandbox]:
    """The SSSMS88 stand-in, configured as the harness's `[notify.sssms88]`."""
    app = create_sms_app(USERNAME, PASSWORD, API_KEY, API_SECRET, Decimal("100"))
    server = ThreadServer(app)
    url = server.start()
    recon.sms = SmsConfig.model_validate(
        {"base_url": url, "username": USERNAME, "password": PASSWORD, "api_key": API_KEY,
         "api_secret": API_SECRET, "account_code": "SANDBOXAPP", "low_credit": "10",
         "alert_numbers": ["601111330000"]}
    )
    yield app[SMS_SANDBOX]
    server.stop()


def _callback(recon: Recon, seconds_ago: int) -> None:
    with recon.sessions.begin() as session:
        session.add(Callback(provider="mtpay", account="default", headers="[]", body=b"{}",
                             received_at=recon.clock() - timedelta(seconds=seconds_ago),
                             state="applied"))


def test_silent_account_is_polled_early_and_alerted_once(recon: Recon, sms: SmsSandbox) -> None:
    """Stale pending orders and no callback within the window: the orders are queried this
    pass although not yet due, one SMS goes out, and the next pass sends no second one."""
    recon.stale_after_s = 3600
    recon.register("S1")
    recon.mtpay.set("S1", "PENDING")
    _callback(recon, seconds_ago=0)
    recon.clock.advance(seconds=1000)
    report = recon.pass_(silence_window_s=900)
    assert report["silence"] == [
        {"account": "mtpay/default", "last_callback_at": report["silence"][0]["last_callback_at"],
         "brought_forward": 1}
    ]
    assert recon.mtpay.count("S1") == 1
    assert len(sms.sends) == 1
    assert "no callbacks received" in sms.sends[0].message
    day = recon.clock().date().isoformat()
    assert report["alerts"]["sent"] == [f"recon:mtpay/default:silence:{day}"]
    recon.clock.advance(seconds=60)
    again = recon.pass_(silence_window_s=900)
    assert len(again["silence"]) == 1
    assert again["alerts"]["suppressed"] == 1
    assert len(sms.sends) == 1
    for secret in (PASSWORD, API_KEY, API_SECRET):
        assert secret not in sms.sends[0].message


def test_a_silence_brings_orders_forward_once(recon: Recon, sms: SmsSandbox) -> None:
    """A quiet account stays silent pass after pass: its orders are brought forward once for
    that silence, then follow their backoff, instead of being queried every window."""
    recon.stale_after_s = 3600
    recon.poll_backoff_s = (86400,)
    recon.register("S3")
    recon.mtpay.set("S3", "PENDING")
    _callback(recon, seconds_ago=0)
    recon.clock.advance(seconds=1000)
    # A window of 1 s: the claim that keeps a silence from bringing orders forward twice
    # lives in Redis, on Redis's clock, which the test's clock does not move.
    first = recon.pass_(silence_window_s=1)
    assert first["silence"][0]["brought_forward"] == 1
    assert recon.mtpay.count("S3") == 1
    for _ in range(2):
        time.sleep(1.2)
        recon.clock.advance(seconds=60)
        again = recon.pass_(silence_window_s=1)
        assert again["silence"][0]["brought_forward"] == 0
    assert recon.mtpay.count("S3") == 1


def test_orders_given_up_on_do_not_make_an_account_silent(
    recon: Recon, sms: SmsSandbox
) -> None:
    """An order flagged `unresolved` is no longer polled; an account whose only pending order
    it is has nothing stale to be silent about, so no silence alert day after day."""
    recon.register("S4")
    recon.mtpay.set("S4", "PENDING")
    recon.clock.advance(days=8)
    recon.pass_()
    assert recon.order("S4").next_poll_at is None
    recon.clock.advance(days=1)
    report = recon.pass_()
    assert report["silence"] == []
    assert not [i for i in report["alerts"]["sent"] if ":silence:" in i]


def test_recent_callback_means_not_silent(recon: Recon, sms: SmsSandbox) -> None:
    """An account that got a callback within the window is not silent, even with old orders."""
    recon.stale_after_s = 3600
    recon.register("S2")
    recon.clock.advance(seconds=1000)
    _callback(recon, seconds_ago=60)
    report = recon.pass_(silence_window_s=900)
    assert report["silence"] == []
    assert (recon.mtpay.count(), sms.sends) == (0, [])


def test_review_findings_are_alerted_without_customer_data(recon: Recon, sms: SmsSandbox) -> None:
    """An amount mismatch sends one SMS naming the account, a count and the order ref only."""
    recon.register("AM2", amount="100.00")
    recon.mtpay.set("AM2", "SUCCESS", amount="150.00")
    _callback(recon, seconds_ago=0)
    recon.clock.advance(seconds=901)
    _callback(recon, seconds_ago=0)
    report = recon.pass_()
    assert len(sms.sends) == 1
    message = sms.sends[0].message
    assert "mtpay/default" in message
    assert "review=1" in message
    assert "AM2" in message
    assert "150" not in message
    assert json.dumps(report["alerts"]).count("review") == 1


def test_low_sms_credit_is_alerted_once_a_day_by_the_pass(recon: Recon, sms: SmsSandbox) -> None:
    """A pass polls the SMS credit; below `low_credit` it sends one SMS, and later passes the
    same day poll again without a second one."""
    sms.credit = Decimal("4.5000")
    report = recon.pass_(credit_check_interval_s=0)
    assert report["sms_credit"] == {"credit": "4.5000", "threshold": "10", "low": True,
                                    "alerted": True}
    assert len(sms.sends) == 1
    assert "SMS credit low" in sms.sends[0].message
    again = recon.pass_(credit_check_interval_s=0)
    assert (again["sms_credit"]["low"], again["sms_credit"]["alerted"]) == (True, False)
    assert len(sms.sends) == 1


def test_credit_is_polled_once_per_interval_whichever_pass_runs(
    recon: Recon, sms: SmsSandbox
) -> None:
    """Passes every minute, maybe on several machines: one poll of the credit per interval."""
    first = recon.pass_(credit_check_interval_s=3600)
    second = recon.pass_(credit_check_interval_s=3600)
    assert first["sms_credit"] == {"credit": "100.0000", "threshold": "10", "low": False,
                                   "alerted": False}
    assert "sms_credit" not in second
    assert sms.logins == 1
    assert sms.sends == []


def test_a_failed_credit_check_leaves_the_pass_done_and_is_tried_again(
    recon: Recon, sms: SmsSandbox
) -> None:
    """Credentials the SMS gateway refuses: the pass still finishes and reports the error; the
    claim is given back, so the next pass polls again."""
    sms.password = "rotated-elsewhere"
    failed = recon.pass_(credit_check_interval_s=3600)
    assert failed["state"] == "done"
    assert failed["sms_credit"] == {"error": "QueryAuth"}
    sms.password = PASSWORD
    sms.credit = Decimal("2")
    retried = recon.pass_(credit_check_interval_s=3600)
    assert retried["sms_credit"]["alerted"] is True
    assert len(sms.sends) == 1


def test_a_scoped_pass_leaves_the_credit_alone(recon: Recon, sms: SmsSandbox) -> None:
    """`payhook reconcile --provider P` is about P's orders: no SMS gateway call."""
    sms.credit = Decimal("1")
    report = recon.report(run_pass(recon.ctx(credit_check_interval_s=0), provider="mtpay"))
    assert report["state"] == "done"
    assert "sms_credit" not in report
    assert (sms.logins, sms.sends) == (0, [])
