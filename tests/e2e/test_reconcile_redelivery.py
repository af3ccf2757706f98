"""A reconciliation task whose worker is killed mid-pass is delivered again by Redis under the
same task id, and that delivery finishes the run: a POST /api/reconcile caller sees it done."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from payhook.broker import RECONCILE_TASK
from sandbox.server import ProviderServer
from sandbox.world import SandboxWorld
from tests.conftest import queue_name, unique
from tests.harness import Stack, fresh_database, wait_for


def test_a_reconcile_run_whose_worker_was_killed_is_finished_by_the_redelivered_task(
    tmp_path: Path, database_url: str, redis_url: str, world: SandboxWorld,
    provider_server: ProviderServer,
) -> None:
    """The worker is SIGKILLed while its pass waits on a provider query; after the visibility
    timeout (6 s here, the stale-run bound too) Redis delivers the task again to the other
    worker, running all along, at its next look for unacked tasks (within
    PAYHOOK_REDELIVERY_SCAN_S, not kombu's 100 s), whose pass takes the run over: the run ends
    `done`, where it was left `running`. The order the dead pass claimed waits out its lease."""
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
        # Two workers from the start: the redelivery must come from the survivor's periodic
        # look for unacked tasks, not from the one a worker makes when it starts.
        stack.start_worker(name="standby")
        stack.register("mtpay", order_no, "100.00")
        time.sleep(2.5)  # the stack's accounts have stale_after_s = 2
        world.stalled["mtpay"] = 60.0
        status, body = stack.api("POST", "/api/reconcile", {"provider": "mtpay"})
        assert status == 202
        run.update(body)
        wait_for(lambda: state() == "running", 30, "the pass to start")
        time.sleep(1)  # into its query, held by the provider
        running, survivor = _running_and_other(tmp_path)
        stack.kill(running)
        killed = time.monotonic()
        world.stalled.pop("mtpay")
        wait_for(lambda: state() in ("done", "failed"), 150, "the run to end")
        waited = time.monotonic() - killed
    finally:
        world.stalled.pop("mtpay", None)
        stack.stop()
        drop()
    print(f"redelivered run done {waited:.1f} s after the kill")
    assert run["state"] == "done", run
    assert (tmp_path / f"{survivor}.log").read_text().count("reconcile_run_resumed") == 1
    # The visibility timeout (6 s, from the first delivery) and one look (every
    # PAYHOOK_REDELIVERY_SCAN_S, default 10 s): kombu's own default looks every 100 s.
    assert waited < 6 + 10 + 5


def _running_and_other(workdir: Path) -> tuple[str, str]:
    """The worker that received the (only) reconciliation task, and the other one."""
    names = ("worker", "standby")
    held = [n for n in names if f"Task {RECONCILE_TASK}[" in (workdir / f"{n}.log").read_text()]
    assert len(held) == 1, held
    return held[0], next(n for n in names if n != held[0])
