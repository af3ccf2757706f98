"""The run rows of passes: a run a killed pass left `running`, or a lost task left `queued`, does
not stay so for ever, and a redelivered task finishes the run its dead first copy left; a run
once finished is never started again, nor written over by its pass but for the sweep's
`abandoned` guess."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import event, select, update
from structlog.testing import capture_logs

from ledger.models import ReconcileRun
from payhook.settings import Settings
from reconcile.context import ReconcileConfig
from reconcile.runner import run_pass
from tests.reconcile.conftest import Recon

T = TypeVar("T")


def test_a_run_left_running_past_the_bound_is_failed_by_the_next_pass(recon: Recon) -> None:
    """A run still `running` longer than `stale_run_after_s` after it started (its pass was
    killed at the time limit) is failed as `abandoned` when the next pass starts; a younger
    running run (a live pass), a younger queued run and a finished run are left as they are."""
    now = recon.clock()
    rows = {
        "stale": ("running", now - timedelta(seconds=601)),
        "live": ("running", now - timedelta(seconds=599)),
        "done": ("done", now - timedelta(days=1)),
        "queued": ("queued", now - timedelta(seconds=599)),
    }
    ids = _add_runs(recon, rows)
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


def test_a_run_left_queued_past_the_bound_is_failed_as_never_started(recon: Recon) -> None:
    """A run POST /api/reconcile queued longer than `stale_run_after_s` ago whose task never
    came (lost with its broker) is failed as `never_started` when the next pass starts; a
    younger queued run is still taken by its task, and run."""
    now = recon.clock()
    ids = _add_runs(recon, {"lost": ("queued", now - timedelta(seconds=601)),
                            "young": ("queued", now - timedelta(seconds=599))})
    assert run_pass(recon.ctx(stale_run_after_s=600), run_id=ids["young"]) == ids["young"]
    lost, young = recon.report(ids["lost"]), recon.report(ids["young"])
    assert (lost["state"], lost["error"]) == ("failed", "never_started")
    assert young["state"] == "done"
    with recon.sessions() as session:
        assert session.get_one(ReconcileRun, ids["lost"]).finished_at == now
        assert session.get_one(ReconcileRun, ids["young"]).started_at == now


@pytest.mark.parametrize(("state", "report"), [
    ("failed", {"error": "never_started"}),  # another machine's sweep failed it first
    ("running", {}),  # a second delivery of the task while its pass runs
    ("done", {"resolved": {"count": 0}}),  # a second delivery after its pass finished
])
def test_a_task_whose_run_is_no_longer_queued_starts_no_pass(
    recon: Recon, state: str, report: dict[str, Any]
) -> None:
    """The task of a queued run takes it only from `queued`: when its run was failed by a sweep
    or is already running or done, it starts no pass and leaves the run as it is."""
    started = recon.clock() - timedelta(seconds=60)
    finished = None if state == "running" else started
    with recon.sessions.begin() as session:
        run = ReconcileRun(started_at=started, finished_at=finished, state=state,
                           report=json.dumps(report))
        session.add(run)
        session.flush()
        run_id = run.id
    assert run_pass(recon.ctx(stale_run_after_s=600), run_id=run_id) == run_id
    with recon.sessions() as session:
        runs = session.scalars(select(ReconcileRun)).all()
        assert [(r.id, r.state, r.started_at, r.finished_at, json.loads(r.report))
                for r in runs] == [(run_id, state, started, finished, report)]


def test_a_pass_abandoned_while_it_ran_still_stores_its_report(recon: Recon) -> None:
    """A pass that outlives the bound (a CLI pass has no time limit) is failed as `abandoned` by a
    beat pass that starts meanwhile; when it ends it stores its real report over that guess,
    marked `marked_abandoned`, and warns; the beat pass's own run is left as it finished."""
    beat: list[int] = []

    def beat_pass() -> None:
        recon.clock.advance(seconds=601)
        beat.append(run_pass(recon.ctx(stale_run_after_s=600)))

    with capture_logs() as logs:
        run_id = _pass_interrupted_by(recon, beat_pass)
    cli = recon.report(run_id)
    assert (cli["state"], cli["marked_abandoned"], "error" in cli) == ("done", True, False)
    assert cli["accounts"]["mtpay/default"]["breaker"] == "closed"  # the pass's own findings
    assert recon.report(beat[0])["state"] == "done"
    events = [line["event"] for line in logs if line["event"].startswith("reconcile_run")]
    assert events == ["reconcile_runs_abandoned", "reconcile_run_finished_after_abandoned"]


def test_a_pass_never_writes_over_a_run_closed_by_another_hand(recon: Recon) -> None:
    """A run closed by anyone but the stale sweep while its pass ran (an operator failing it by
    hand) keeps that verdict: the pass ends without writing its report, and logs an error."""
    closed = json.dumps({"error": "stopped by hand"})

    def close_by_hand() -> None:
        with recon.sessions.begin() as session:
            session.execute(update(ReconcileRun).values(state="failed", report=closed,
                                                        finished_at=recon.clock()))

    with capture_logs() as logs:
        run_id = _pass_interrupted_by(recon, close_by_hand)
    assert recon.report(run_id) == {"error": "stopped by hand", "state": "failed",
                                    "run_id": run_id}
    assert [line["found"] for line in logs
            if line["event"] == "reconcile_run_not_finished"] == ["failed"]


def _pass_interrupted_by(recon: Recon, interrupt: Callable[[], None]) -> int:
    """Run a pass with no queued run (as the CLI does) that calls `interrupt` once while it
    queries the providers; its run's id."""
    ctx = recon.ctx(stale_run_after_s=600)
    interrupts = [interrupt]

    def run(coro: Coroutine[Any, Any, T], /) -> T:
        while interrupts:
            interrupts.pop()()
        return recon.run(coro)

    return run_pass(replace(ctx, run=run))


class Killed(BaseException):
    """The worker process dying mid-pass: nothing of the pass runs after it, not even its
    `except Exception`."""


def _killed_pass(recon: Recon, run_id: int | None, task_id: str) -> None:
    """Run a pass as task `task_id` whose worker dies once it has claimed its due orders, as
    it starts to query them."""

    def run(coro: Coroutine[Any, Any, T], /) -> T:
        coro.close()
        raise Killed

    with pytest.raises(Killed):
        run_pass(replace(recon.ctx(stale_run_after_s=600), run=run), run_id=run_id,
                 task_id=task_id)


def _due_order(recon: Recon, number: str) -> None:
    """An order the provider says succeeded, due to be polled now."""
    recon.register(number)
    recon.mtpay.set(number, "SUCCESS")
    recon.clock.advance(seconds=901)


@pytest.mark.parametrize("swept", [False, True])
def test_a_redelivered_task_finishes_the_queued_run_its_killed_copy_left(
    recon: Recon, swept: bool
) -> None:
    """The task of a queued run, killed mid-pass and redelivered by Redis under the same id
    after the visibility timeout (the stale bound), takes the run over before the sweep would
    fail it, runs the pass, and finishes that run `done`: its POST caller sees it complete.
    So too when another pass has failed it as `abandoned` meanwhile (workers look for such
    tasks every PAYHOOK_REDELIVERY_SCAN_S, beat runs a pass a minute): the real report
    replaces that guess."""
    _due_order(recon, "RT1")
    (run_id,) = _add_runs(recon, {"posted": ("queued", recon.clock())}).values()
    _killed_pass(recon, run_id, "task-1")
    recon.clock.advance(seconds=601)
    if swept:  # a pass over another provider's orders: it sweeps, and leaves RT1 due
        run_pass(recon.ctx(stale_run_after_s=600), provider="opay")
        assert recon.report(run_id)["error"] == "abandoned"
    with capture_logs() as logs:
        assert run_pass(recon.ctx(stale_run_after_s=600), run_id=run_id,
                        task_id="task-1") == run_id
    report = recon.report(run_id)
    assert (report["state"], report["resolved_by_poll"]["count"]) == ("done", 1)
    assert "error" not in report
    assert recon.order("RT1").status == "succeeded"
    assert [(e["event"], e.get("run_id")) for e in logs
            if e["event"].startswith("reconcile_run")] == [("reconcile_run_resumed", run_id)]
    with recon.sessions() as session:
        run = session.get_one(ReconcileRun, run_id)
        assert (run.started_at, run.claimed_by) == (recon.clock(), "task-1")


def test_a_redelivered_beat_task_resumes_its_run_not_starts_a_second(recon: Recon) -> None:
    """A beat task (no run id) killed mid-pass and redelivered under the same id finishes the
    run its first copy started: one run, `done`, none left `running` or failed `abandoned`."""
    _due_order(recon, "RB1")
    _killed_pass(recon, None, "beat-1")
    recon.clock.advance(seconds=601)
    run_id = run_pass(recon.ctx(stale_run_after_s=600), task_id="beat-1")
    with recon.sessions() as session:
        assert [(r.id, r.state, r.claimed_by) for r in session.scalars(select(ReconcileRun))
                ] == [(run_id, "done", "beat-1")]
    assert recon.report(run_id)["resolved_by_poll"]["count"] == 1


@pytest.mark.parametrize("queued", [True, False])
def test_a_run_running_under_another_task_is_never_taken_over(recon: Recon, queued: bool) -> None:
    """A run `running` for another task id is a pass still running elsewhere: a duplicate
    delivery of its queued task starts nothing, and a beat task leaves it alone (starting its
    own run); the running run keeps its start and its task."""
    started = recon.clock() - timedelta(seconds=60)
    with recon.sessions.begin() as session:
        session.add(run := ReconcileRun(started_at=started, state="running", report="{}",
                                        claimed_by="task-1"))
        session.flush()
        run_id = run.id
    with capture_logs() as logs:
        ran = run_pass(recon.ctx(stale_run_after_s=600), run_id=run_id if queued else None,
                       task_id="task-2")
    with recon.sessions() as session:
        runs = {r.id: (r.state, r.started_at, r.claimed_by)
                for r in session.scalars(select(ReconcileRun))}
    assert runs.pop(run_id) == ("running", started, "task-1")
    assert runs == ({} if queued else {ran: ("done", recon.clock(), "task-2")})
    assert "reconcile_run_resumed" not in [e["event"] for e in logs]


def test_the_reconcile_task_runs_its_pass_under_its_own_task_id(
    recon: Recon, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`workers.tasks.reconcile_pass` hands its Celery task id to the pass: delivered again
    under the id of its killed first copy, it finishes that copy's run."""
    from workers import runtime, tasks

    _due_order(recon, "RW1")
    (run_id,) = _add_runs(recon, {"posted": ("queued", recon.clock())}).values()
    _killed_pass(recon, run_id, "celery-task-1")
    recon.clock.advance(seconds=601)
    ctx = recon.ctx(stale_run_after_s=600)
    worker = runtime.Runtime(settings=Settings(), accounts=ctx.accounts,
                             engine=recon.sessions.kw["bind"], sessions=recon.sessions,
                             redis=recon.redis, _pass=ctx)
    monkeypatch.setattr(runtime, "_current", worker)
    monkeypatch.setenv("PAYHOOK_REDIS_URL", redis_url)  # the Celery app refuses to load without
    task = tasks.reconcile_pass
    task.push_request(id="celery-task-1")  # as a worker does for the delivery it runs
    try:
        assert task.run(run_id=run_id) == run_id
    finally:
        task.pop_request()
    assert recon.report(run_id)["state"] == "done"


def test_the_stale_run_bound_is_the_visibility_timeout() -> None:
    """The bound is the visibility timeout, which the task time limit (when a worker's pass is
    killed) stays below: a live pass is never taken for an abandoned one."""
    settings = Settings(visibility_timeout_s=900, task_time_limit_s=300)
    assert ReconcileConfig.from_settings(settings).stale_run_after_s == 900
    assert ReconcileConfig().stale_run_after_s == 600


def _add_runs(recon: Recon, rows: dict[str, tuple[str, datetime]]) -> dict[str, int]:
    """Store a run per name, in the state and with the start given; their ids by name."""
    ids: dict[str, int] = {}
    with recon.sessions.begin() as session:
        for name, (state, started) in rows.items():
            run = ReconcileRun(started_at=started, state=state, report="{}")
            session.add(run)
            session.flush()
            ids[name] = run.id
    return ids


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
        run_pass(recon.ctx(), task_id="beat-1")  # a task's pass looks for its own run first
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert any("started_at <" in statement for statement, _ in sent)
    assert any("claimed_by =" in statement for statement, _ in sent)
    with engine.begin() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        explain, scan = ("EXPLAIN", "Seq Scan") if postgres else ("EXPLAIN QUERY PLAN", "SCAN ")
        for statement, parameters in sent:
            rows = conn.exec_driver_sql(f"{explain} {statement}", parameters)
            plan = " ".join(str(column) for row in rows for column in row)
            assert scan not in plan, (statement, plan)
