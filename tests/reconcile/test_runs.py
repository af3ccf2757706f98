"""The run rows of passes: a run a killed pass left `running` does not stay so for ever."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import event

from ledger.models import ReconcileRun
from payhook.settings import Settings
from reconcile.context import ReconcileConfig
from tests.reconcile.conftest import Recon


def test_a_run_left_running_past_the_bound_is_failed_by_the_next_pass(recon: Recon) -> None:
    """A run still `running` longer than `stale_run_after_s` after it started (its pass was
    killed at the time limit) is failed as `abandoned` when the next pass starts; a younger
    running run (a live pass) and finished or queued runs are left as they are."""
    now = recon.clock()
    rows = {
        "stale": ("running", now - timedelta(seconds=601)),
        "live": ("running", now - timedelta(seconds=599)),
        "done": ("done", now - timedelta(days=1)),
        "queued": ("queued", now - timedelta(days=1)),
    }
    ids: dict[str, int] = {}
    with recon.sessions.begin() as session:
        for name, (state, started) in rows.items():
            run = ReconcileRun(started_at=started, state=state, report="{}")
            session.add(run)
            session.flush()
            ids[name] = run.id
    report = recon.pass_(stale_run_after_s=600)
    assert report["state"] == "done"
    stale = recon.report(ids["stale"])
    assert (stale["state"], stale["error"]) == ("failed", "abandoned")
    with recon.sessions() as session:
        runs = {name: session.get_one(ReconcileRun, run_id) for name, run_id in ids.items()}
        assert runs["stale"].finished_at == now
        assert {n: (r.state, r.finished_at) for n, r in runs.items() if n != "stale"} == {
            "live": ("running", None), "done": ("done", None), "queued": ("queued", None)}
        assert json.loads(runs["live"].report) == {}


def test_the_stale_run_bound_is_the_visibility_timeout() -> None:
    """The bound is the visibility timeout, which the task time limit (when a worker's pass is
    killed) stays below: a live pass is never taken for an abandoned one."""
    settings = Settings(visibility_timeout_s=900, task_time_limit_s=300)
    assert ReconcileConfig.from_settings(settings).stale_run_after_s == 900
    assert ReconcileConfig().stale_run_after_s == 600


def test_no_statement_a_pass_sends_to_the_runs_table_scans_it(recon: Recon) -> None:
    """The stale-run sweep every pass starts with, and the run's own writes, read
    `reconcile_runs` through an index (PostgreSQL told to avoid scans, the test table being
    tiny), never a scan of a table that gains a row a minute."""
    with recon.sessions.begin() as session:
        session.add(ReconcileRun(started_at=recon.clock() - timedelta(days=1), state="done",
                                 report="{}"))
    engine = recon.sessions.kw["bind"]
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "reconcile_runs" in statement and not statement.lstrip().startswith("INSERT"):
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        recon.pass_()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert any("started_at <" in statement for statement, _ in sent)
    with engine.begin() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        explain, scan = ("EXPLAIN", "Seq Scan") if postgres else ("EXPLAIN QUERY PLAN", "SCAN ")
        for statement, parameters in sent:
            rows = conn.exec_driver_sql(f"{explain} {statement}", parameters)
            plan = " ".join(str(column) for row in rows for column in row)
            assert scan not in plan, (statement, plan)
