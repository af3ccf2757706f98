"""A reconciliation task whose worker is killed mid-pass is delivered again by Redis under the
same task id, and that delivery finishes the run: a POST /api/reconcile caller sees it done."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sandbox.world import ProviderServer, SandboxWorld
from tests.conftest import queue_name, unique
from tests.harness import Stack, fresh_database, wait_for


def test_a_reconcile_run_whose_worker_was_killed_is_finished_by_the_redelivered_task(
    tmp_path: Path, database_url: str, redis_url: str, world: SandboxWorld,
    provider_server: ProviderServer,
) -> None:
    """The worker is SIGKILLed while its pass waits on a provider query; after the visibility
    timeout (6 s here, the stale-run bound too) Redis delivers the task again to a new worker,
    whose pass takes the run over: the run ends `done`, where it was left `running` (then
    failed as abandoned). The order the dead pass claimed waits out its claim's lease."""
    url, drop = fresh_database(database_url, tmp_path)
    stack = Stack(tmp_path, url, redis_url, world, provider_server.url,
                  queue=queue_name("payhook-rd"), PAYHOOK_VISIBILITY_TIMEOUT_S="6",
                  PAYHOOK_TASK_TIME_LIMIT_S="5")
    order_no = unique("RD")
    world.publish("mtpay", world.fields("mtpay", order_no, "succeeded", "100.00"))
    run: dict[str, Any] = {}

    def state() -> str:
        run.update(stack.api("GET", f"/api/reconcile/runs/{run['id']}")[1])
        return str(run["state"])

    try:
        stack.start(beat=False)  # no beat pass to sweep the killed run meanwhile
        stack.register("mtpay", order_no, "100.00")
        time.sleep(2.5)  # the stack's accounts have stale_after_s = 2
        world.stalled["mtpay"] = 60.0
        status, body = stack.api("POST", "/api/reconcile", {"provider": "mtpay"})
        assert status == 202
        run.update(body)
        wait_for(lambda: state() == "running", 30, "the pass to start")
        time.sleep(1)  # into its query, held by the provider
        stack.kill("worker")
        world.stalled.pop("mtpay")
        # Kombu looks for unacked tasks past the timeout when a worker starts, then only every
        # 100 s (10 s, throttled to one scan in ten): start the new worker once it is past.
        time.sleep(6)
        stack.start_worker()
        wait_for(lambda: state() in ("done", "failed"), 90, "the run to end")
    finally:
        world.stalled.pop("mtpay", None)
        stack.stop()
        drop()
    assert run["state"] == "done", run
    assert (tmp_path / "worker.log").read_text().count("reconcile_run_resumed") == 1
