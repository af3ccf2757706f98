"""Thin Celery tasks: they take ids, call one function, and are safe to run twice."""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from payhook.broker import PROCESS_TASK, RECONCILE_TASK, SWEEP_TASK
from reconcile.runner import run_pass
from workers import runtime
from workers.app import app
from workers.process import RETRYABLE, process_batch
from workers.sweeper import sweep

log = structlog.get_logger(__name__)


@app.task(
    name=PROCESS_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=RETRYABLE,
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=8,
)
def process_callbacks(ids: list[int]) -> dict[str, Any]:
    """Process stored callbacks by id; those with transient failures come back later."""
    rt = runtime.get()
    # Redis redelivers a lost worker's task under its id, which tells its claims from another's.
    task_id = process_callbacks.request.id or f"local-{uuid.uuid4()}"
    result = process_batch(rt, ids, task_id)
    for countdown, retry in result.retry.items():
        process_callbacks.apply_async(args=[retry], countdown=countdown, retry=False)
    for callback_id in result.split:  # an earlier attempt at this batch never finished
        process_callbacks.apply_async(args=[[callback_id]], retry=False)
    _count_outcomes(rt, result.reasons)
    log.info("batch_processed", size=len(ids), split=len(result.split), **result.states)
    retried = sum(len(batch) for batch in result.retry.values())
    return {"states": result.states, "retry": retried, "split": len(result.split)}


def _count_outcomes(rt: runtime.Runtime, counts: dict[str, int]) -> None:
    """Outcome counters live in Redis so the receiver's /metrics shows every worker's."""
    if not counts:
        return
    try:
        pipe = rt.redis.pipeline()
        for state_reason, count in counts.items():
            pipe.hincrby(f"{rt.settings.queue}:outcomes", state_reason, count)
        pipe.execute()
    except Exception as exc:  # metrics must never fail the work
        log.warning("outcome_metrics_failed", error=str(exc)[:120])


@app.task(name=SWEEP_TASK, acks_late=True, ignore_result=True)
def sweep_callbacks() -> int:
    """Re-enqueue callbacks left non-final past their deadline (lost queue, killed worker)."""
    rt = runtime.get()
    return sweep(rt, lambda ids: process_callbacks.apply_async(args=[ids], retry=False))


@app.task(name=RECONCILE_TASK, acks_late=True, ignore_result=True)
def reconcile_pass(
    run_id: int | None = None, provider: str | None = None, account: str | None = None
) -> int:
    """Run one reconciliation pass (the queued run `run_id`, or a new one); the run's id."""
    # Redis redelivers a lost worker's task under its id: the run it left `running` is its own.
    return run_pass(runtime.get().pass_context(), run_id=run_id, provider=provider,
                    account=account, task_id=reconcile_pass.request.id)
