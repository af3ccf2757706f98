"""The run row of a pass: (queued →) running → done (or failed) with its report.

The next pass to start fails, after `stale_run_after_s`, a run left `running` by a killed pass
(report `{"error": "abandoned"}`) and a run left `queued` by a lost task (`{"error":
"never_started"}`); a queued run is started only from `queued`, so a late task revives neither.
A pass that outlives the bound and is abandoned still stores its real report (see finish).

A run names the task running it (`claimed_by`). Redis redelivers a task whose worker died
under the same id: that task takes over the run its dead first copy left `running`, or that a
sweep has failed as `abandoned` meanwhile (see resume), where it would find the run taken and
leave it to the sweep. A run `running` under another task's id is a pass still running
elsewhere (a duplicate delivery), never run twice.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import structlog
from sqlalchemy import ColumnElement, and_, or_, select, update

from ledger.models import ReconcileRun
from reconcile.context import PassContext
from reconcile.report import PassReport

log = structlog.get_logger(__name__)
# Why a run no pass will finish failed (see abandon_stale), by the state it was left in.
STALE_ERRORS = {"running": "abandoned", "queued": "never_started"}
ABANDONED = json.dumps({"error": STALE_ERRORS["running"]})


def abandon_stale(ctx: PassContext, now: datetime) -> None:
    """Fail the runs no pass will finish: `running` longer than any pass lives (killed at the
    task time limit, or their process lost), or still `queued` that long after POST
    /api/reconcile queued them (their task lost). One conditional UPDATE per state, so passes
    starting at once on several machines fail each such run once, and none a run that has just
    finished or just started."""
    bound = now - timedelta(seconds=ctx.config.stale_run_after_s)
    with ctx.sessions.begin() as session:
        failed = {
            state: session.execute(
                update(ReconcileRun)
                .where(ReconcileRun.state == state, ReconcileRun.started_at < bound)
                .values(state="failed", finished_at=now, report=json.dumps({"error": error}))
                .returning(ReconcileRun.id)
            ).scalars().all()
            for state, error in STALE_ERRORS.items()
        }
    for state, runs in failed.items():
        if runs:
            log.warning("reconcile_runs_abandoned", left=state, error=STALE_ERRORS[state],
                        runs=list(runs)[:20], count=len(runs),
                        after_s=ctx.config.stale_run_after_s)


def resume(ctx: PassContext, task_id: str, run_id: int | None, now: datetime) -> int | None:
    """Take over the run (`run_id`, or beat's unnamed one) this task's own dead first copy
    left; its id, or None when there is none.

    One conditional UPDATE (claimed by `task_id`, and `running` or failed as `abandoned`), its
    start moved to now: the pass starts over, and the sweep bounds it as any pass. Called
    before this pass's sweep: a task is redelivered after the visibility timeout, the sweep's
    bound. Workers look for such tasks only every so often (PAYHOOK_REDELIVERY_SCAN_S), so
    another pass (beat's, every minute) may have failed the run as `abandoned` by then: a
    guess, which the pass's real report replaces, as `finish` does for a pass that outlived
    the bound."""
    left = or_(ReconcileRun.state == "running",
               and_(ReconcileRun.state == "failed", ReconcileRun.report == ABANDONED))
    where = [ReconcileRun.claimed_by == task_id, left]
    if run_id is not None:
        where.append(ReconcileRun.id == run_id)
    with ctx.sessions.begin() as session:
        taken = session.execute(
            update(ReconcileRun).where(*where)
            .values(state="running", started_at=now, finished_at=None, report="{}")
            .returning(ReconcileRun.id)
        ).scalars().first()
    if taken is not None:
        log.warning("reconcile_run_resumed", run_id=taken, task_id=task_id)
    return taken


def start_new(ctx: PassContext, provider: str | None, account: str | None, now: datetime,
              task_id: str | None) -> int:
    """A run for a pass nobody queued (beat, the CLI): `running` from the start."""
    with ctx.sessions.begin() as session:
        run = ReconcileRun(started_at=now, state="running", provider=provider, account=account,
                           report="{}", claimed_by=task_id)
        session.add(run)
        session.flush()
        return run.id


def start_queued(ctx: PassContext, run_id: int, now: datetime, task_id: str | None) -> bool:
    """Take the run POST /api/reconcile queued, only from `queued`; False when it is not.

    A task that arrives after the sweep failed its run (`never_started`), or a second delivery
    of it while the first runs, starts no pass: the caller was told the run failed, and beat's
    next pass polls the same due orders anyway."""
    with ctx.sessions.begin() as session:
        taken = session.execute(
            update(ReconcileRun)
            .where(ReconcileRun.id == run_id, ReconcileRun.state == "queued")
            .values(state="running", started_at=now, claimed_by=task_id)
            .returning(ReconcileRun.id)
        ).first()
        if taken is None:
            state = session.scalar(select(ReconcileRun.state).where(ReconcileRun.id == run_id))
            log.warning("reconcile_run_not_started", run_id=run_id, state=state)
    return taken is not None


def finish(ctx: PassContext, run_id: int, state: str, report: PassReport) -> None:
    """Store the pass's outcome on its run if still `running`, or if a sweep failed it as
    `abandoned` meanwhile (a CLI pass has no time limit to keep it under the bound): the real
    report says more than that guess, and is stored marked `"marked_abandoned": true`. Any
    other state was set on purpose, never written over."""
    finished = ctx.now()
    with ctx.sessions.begin() as session:

        def store(*where: ColumnElement[bool]) -> bool:  # one conditional UPDATE
            return session.execute(
                update(ReconcileRun).where(ReconcileRun.id == run_id, *where)
                .values(state=state, finished_at=finished, report=report.dumps(finished))
                .returning(ReconcileRun.id)
            ).first() is not None

        if store(ReconcileRun.state == "running"):
            return
        report.tail["marked_abandoned"] = True
        if store(ReconcileRun.state == "failed", ReconcileRun.report == ABANDONED):
            log.warning("reconcile_run_finished_after_abandoned", state=state,
                        ran_s=round((finished - report.started_at).total_seconds()))
            return
        found = session.scalar(select(ReconcileRun.state).where(ReconcileRun.id == run_id))
        log.error("reconcile_run_not_finished", state=state, found=found)
