"""A reconciliation pass that runs out of time stops itself before the task time limit kills it:
its run fails as `time_limit` with its report, and the orders it did not answer are due again
at once, for the next pass, not after their claim's lease."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select

from ledger.models import Order
from sandbox.server import ProviderServer
from sandbox.world import SandboxWorld
from tests.conftest import queue_name, unique
from tests.harness import Stack, fresh_database, wait_for


def test_a_pass_out_of_time_fails_its_run_and_hands_back_its_unanswered_orders(
    tmp_path: Path, database_url: str, redis_url: str, world: SandboxWorld,
    provider_server: ProviderServer,
) -> None:
    """A pass whose provider holds every query (60 s) is told to stop at its soft time limit
    (12 s less the 3 s wind-down) and ends its run `failed`, report error `time_limit`, within
    seconds: not killed at 12 s and left `running` for the sweep (60 s here). Its two claimed
    orders are due again at once (not after the 600 s lease), so the next pass, with the
    provider answering again, asks about them and resolves both, on the same worker."""
    url, drop = fresh_database(database_url, tmp_path)
    stack = Stack(tmp_path, url, redis_url, world, provider_server.url,
                  queue=queue_name("payhook-tl"), PAYHOOK_VISIBILITY_TIMEOUT_S="60",
                  PAYHOOK_TASK_TIME_LIMIT_S="12", PAYHOOK_RECONCILE_WIND_DOWN_S="3")
    orders = [unique("TL"), unique("TL")]
    for order_no in orders:
        world.publish("mtpay", world.fields("mtpay", order_no, "succeeded", "100.00"))
    engine = create_engine(url)
    try:
        stack.start(worker=False, beat=False)  # no beat pass meanwhile: the passes are the test's
        stack.start_worker(concurrency=1)  # one process: the second pass runs where the first did
        for order_no in orders:
            stack.register("mtpay", order_no, "100.00")
        time.sleep(2.5)  # the stack's accounts have stale_after_s = 2
        world.stalled["mtpay"] = 60.0
        started = time.monotonic()
        stopped = _run_pass(stack, 30)
        took = time.monotonic() - started
        world.stalled.pop("mtpay")
        with engine.connect() as conn:
            due_at = conn.execute(select(Order.next_poll_at)
                                  .where(Order.merchant_order_no.in_(orders))).scalars().all()
        after = _run_pass(stack, 60)
    finally:
        world.stalled.pop("mtpay", None)
        stack.stop()
        engine.dispose()
        drop()
    assert stopped["state"] == "failed", stopped
    assert (stopped["report"]["error"], stopped["report"]["released"]) == ("time_limit", 2)
    assert stopped["report"]["accounts"]["mtpay/default"]["claimed"] == 2
    assert 9 <= took < 12, took  # told to stop at 9 s, its run stored before the kill at 12 s
    assert len(due_at) == 2
    assert all(at is not None and _aware(at) <= datetime.now(UTC) for at in due_at), due_at
    assert after["state"] == "done", after
    assert after["report"]["accounts"]["mtpay/default"]["claimed"] == 2
    resolved = after["report"]["resolved_by_poll"]["orders"]
    assert sorted(r["order"] for r in resolved) == sorted(f"mtpay/default/{o}" for o in orders)
    log = (tmp_path / "worker.log").read_text()
    assert "reconcile_pass_out_of_time" in log
    assert "Hard time limit" not in log


def _run_pass(stack: Stack, timeout: float) -> dict[str, Any]:
    """POST /api/reconcile for mtpay and wait for its run to end; the run."""
    status, body = stack.api("POST", "/api/reconcile", {"provider": "mtpay"})
    assert status == 202, body
    run: dict[str, Any] = {}

    def ended() -> bool:
        run.update(stack.api("GET", f"/api/reconcile/runs/{body['id']}")[1])
        return run["state"] in ("done", "failed")

    wait_for(ended, timeout, "the run to end")
    return run


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
