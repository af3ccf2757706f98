"""/api/reconcile: queueing a reconciliation pass and reading its report."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import update

from ingest.api.common import bad_request, db_session, found, in_thread, json_body, row_id
from ledger.models import ReconcileRun
from ledger.views import iso

log = structlog.get_logger(__name__)


class ReconcileIn(BaseModel):
    """POST /api/reconcile body (optional): which provider and account to pass over."""

    model_config = ConfigDict(extra="forbid")

    provider: str | None = Field(default=None, max_length=32)
    account: str | None = Field(default=None, max_length=64)


async def post_reconcile(request: web.Request) -> web.Response:
    """Queue a reconciliation pass; its report appears under /api/reconcile/runs/{id}."""
    from ingest.app import ACCOUNTS, CELERY
    from payhook.broker import RECONCILE_TASK

    reconcile_in = ReconcileIn()  # no body: every provider and account
    try:
        if await request.read():
            reconcile_in = ReconcileIn.model_validate(await json_body(request))
    except ValidationError as exc:
        return bad_request(str(exc).splitlines()[0][:300])
    except ValueError:
        return bad_request("body must be JSON")
    provider, account = reconcile_in.provider, reconcile_in.account
    unknown = request.app[ACCOUNTS].unknown_in_scope(provider, account)
    if unknown is not None:
        return bad_request(f"{unknown[0]}: {unknown[1]}")

    def work() -> int:
        with db_session(request) as session, session.begin():
            run = ReconcileRun(
                started_at=datetime.now(UTC),
                state="queued",
                provider=provider,
                account=account,
                report="{}",
            )
            session.add(run)
            session.flush()
            return run.id

    run_id = await in_thread(work)
    celery = request.app[CELERY]
    try:
        await in_thread(
            lambda: celery.send_task(
                RECONCILE_TASK, kwargs={"run_id": run_id, "provider": provider, "account": account}
            )
        )
    except Exception as exc:  # the broker is away: say so, and leave no run queued for ever
        log.error("reconcile_not_queued", run_id=run_id, error=type(exc).__name__)

        def fail() -> bool:
            # Only from `queued`: had the task got through after all, its pass owns the run.
            with db_session(request) as session, session.begin():
                return session.execute(
                    update(ReconcileRun)
                    .where(ReconcileRun.id == run_id, ReconcileRun.state == "queued")
                    .values(state="failed", finished_at=datetime.now(UTC),
                            report=json.dumps({"error": "broker unavailable"}))
                    .returning(ReconcileRun.id)
                ).first() is not None

        if await in_thread(fail):
            return web.json_response({"id": run_id, "state": "failed",
                                      "error": "broker unavailable; retry later"}, status=503)
    return web.json_response({"id": run_id, "state": "queued"}, status=202)


async def get_reconcile_run(request: web.Request) -> web.Response:
    run_id = row_id(request, "run")

    def work() -> dict[str, Any] | None:
        with db_session(request) as session:
            run = session.get(ReconcileRun, run_id)
            if run is None:
                return None
            return {
                "id": run.id,
                "state": run.state,
                "started_at": iso(run.started_at),
                "finished_at": iso(run.finished_at),
                "provider": run.provider,
                "account": run.account,
                "report": json.loads(run.report),
            }

    return await found("run", work)

