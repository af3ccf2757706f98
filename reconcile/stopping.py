"""How a reconciliation pass stops before its end, past its own deadline (`context.Deadline`,
checked at its natural points) or told to by Celery's soft time limit (`OutOfTime`, a signal at
whatever line runs, the backstop): its run fails as `time_limit` and its unanswered orders are
handed back (`stop`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import structlog

from reconcile import runs
from reconcile.context import OutOfTime, PassContext
from reconcile.due import release
from reconcile.report import PassReport

log = structlog.get_logger(__name__)


@dataclass
class Held:
    """The orders a pass has claimed and not yet answered (their answers not committed), and
    the end of their lease."""

    until: datetime | None = None
    ids: set[int] = field(default_factory=set)


def out_of_time(exc: BaseException) -> bool:
    """Whether `exc` is the soft time limit's, or was raised while it unwound (the rollback of
    a transaction it broke into)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OutOfTime):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def stop(ctx: PassContext, run_id: int, report: PassReport, held: Held) -> None:
    """End a pass out of time: its unanswered orders due again now, its run failed as
    `time_limit`. Each in a transaction of its own: the limit may have broken into any other,
    and the run is stored even if handing the orders back fails (their lease brings them back)."""
    released = 0
    if held.until is not None and held.ids:
        try:
            with ctx.sessions.begin() as session:
                released = release(session, held.ids, leased_until=held.until, now=ctx.now())
        except Exception as exc:
            log.warning("reconcile_release_failed", orders=len(held.ids), error=type(exc).__name__)
    log.warning("reconcile_pass_out_of_time", unanswered=len(held.ids), released=released)
    report.tail["error"] = "time_limit"
    report.tail["released"] = released
    runs.finish(ctx, run_id, "failed", report)
