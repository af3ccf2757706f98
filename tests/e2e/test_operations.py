"""The operational surface of the receiver: metrics, readiness, callbacks refused by route logged
with a reason, and bodies stored as sent whatever their content encoding."""

from __future__ import annotations

import json

import pytest

from tests.conftest import unique
from tests.e2e.receiver import logged_from_now
from tests.harness import Stack, exchange, http


def test_metrics_expose_the_pipeline(stack: Stack) -> None:
    """/metrics counts acks per provider and shows the oldest non-final callback's age."""
    fields = stack.world.fields("opay", unique(), "succeeded", "1.00")
    stack.post(stack.world.callback("opay", fields))
    status, body = http("GET", stack.url + "/metrics")
    text = body.decode()
    assert status == 200
    assert 'payhook_callbacks_acknowledged_total{provider="opay"}' in text
    assert "payhook_ack_latency_seconds_bucket" in text
    assert "payhook_oldest_unfinished_callback_age_seconds" in text
    # The stack is shared by the module's tests: at least this callback's commit is counted.
    commits = [line for line in text.splitlines()
               if line.startswith("payhook_inbox_commit_seconds_count")]
    assert commits
    assert float(commits[0].split()[-1]) >= 1
    assert "payhook_inbox_group_rows_bucket" in text


def test_readyz_checks_database_and_redis(stack: Stack) -> None:
    """/readyz answers 200 only with both the database and Redis reachable."""
    status, body = http("GET", stack.url + "/readyz")
    assert status == 200
    assert b'"database": "ok"' in body
    assert b'"redis": "ok"' in body


def test_callbacks_refused_by_route_are_logged_with_a_reason(stack: Stack) -> None:
    """An unknown provider or account (404) and a method other than POST (405) are answered,
    and each leaves a log line saying why."""
    logged = logged_from_now(stack)
    assert http("POST", stack.url + "/callbacks/nosuchpay", body=b"{}")[0] == 404
    assert http("POST", stack.url + "/callbacks/opay/nosuchaccount", body=b"{}")[0] == 404
    status, _, headers = exchange("GET", stack.url + "/callbacks/opay")
    assert (status, headers.get("Allow")) == (405, "POST")
    lines = [json.loads(line) for line in logged().splitlines() if line.startswith(b"{")]
    refused = [(e["event"], e.get("provider"), e.get("account"), e.get("method"))
               for e in lines if e["event"].startswith("callback_")]
    assert refused == [("callback_unknown_account", "nosuchpay", "default", None),
                       ("callback_unknown_account", "opay", "nosuchaccount", None),
                       ("callback_wrong_method", None, None, "GET")]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_a_callback_is_stored_as_sent_whatever_its_content_encoding(
    stack: Stack, encoding: str
) -> None:
    """The receiver does not decode a body: one whose Content-Encoding does not match it (or
    names a coding nothing here reads) is stored byte for byte and acknowledged, then judged
    by a worker, instead of a 500 or a 400 that stores nothing."""
    body = f'{{"lies": "{unique()}"}}'.encode()
    status, reply, headers = exchange("POST", stack.url + "/callbacks/otgpay", body=body,
                                      headers={"Content-Type": "application/json",
                                               "Content-Encoding": encoding})
    assert (status, reply) == (200, b"SUCCESS")
    callback_id = int(headers["X-Payhook-Callback-Id"])
    assert stack.callback(callback_id)["body"] == body.decode()
    [record] = stack.wait_final([callback_id])
    assert record["state"] == "rejected"
