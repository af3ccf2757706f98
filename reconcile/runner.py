"""One reconciliation pass: silence check, claim due orders, poll, apply, report, alert, and
the SMS credit check.

Synchronous at the top (the worker is), asynchronous for the provider queries, which run
through `ctx.run`. The pass's run row (`reconcile.runs`) moves (queued →) running → done (or
failed) with its report.

Every Redis call of a pass (silence claims, breakers, query budgets, alert and credit claims)
goes through one `RedisCalls`: once one finds Redis out of reach, the rest fail at once, with
the outcome each would have had, instead of each paying the client's retries (seconds).

A worker's pass out of time (`OutOfTime`, Celery's soft time limit) stops where it is, before the
task time limit kills it: its run fails as `time_limit` with the report of what it did, and the
orders it claimed but did not answer are due again at once, not after their lease.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from datetime import timedelta

import redis
import structlog

from payhook.accounts import Account
from reconcile import runs
from reconcile.breaker import Breaker, BreakerState
from reconcile.budget import RateBudget
from reconcile.context import Deadline, PassContext
from reconcile.due import DueOrder, claim_due
from reconcile.outage import RedisCalls, RedisDown
from reconcile.poll import Answer, Polled, apply_answer, query_all
from reconcile.report import AlertSpec, PassReport
from reconcile.silence import find_silent, tighten
from reconcile.stopping import Held, out_of_time, stop

log = structlog.get_logger(__name__)


def run_pass(
    ctx: PassContext,
    run_id: int | None = None,
    provider: str | None = None,
    account: str | None = None,
    task_id: str | None = None,
) -> int:
    """Run one pass over the configured accounts in scope; the id of its stored run. A queued
    `run_id` that is no longer `queued` starts no pass (see runs.start_queued), unless it is
    `running` for `task_id`, the Celery task running the pass (None: the CLI): that task's
    dead first copy's run, taken over (see runs.resume), as is beat's unnamed one."""
    started, deadline = ctx.now(), Deadline.after(ctx.config.time_limit_s)
    resumed = runs.resume(ctx, task_id, run_id, started) if task_id is not None else None
    runs.abandon_stale(ctx, started)
    if resumed is not None:
        run_id = resumed
    elif run_id is None:
        run_id = runs.start_new(ctx, provider, account, started, task_id)
    elif not runs.start_queued(ctx, run_id, started, task_id):
        return run_id
    report = PassReport(started, provider, account, ctx.config.report_refs)
    held = Held()
    structlog.contextvars.bind_contextvars(reconcile_run=run_id)
    try:
        _execute(ctx, report, held, deadline, provider, account)
    except Exception as exc:
        if out_of_time(exc):
            stop(ctx, run_id, report, held)
            raise
        log.exception("reconcile_pass_failed")
        report.tail["error"] = type(exc).__name__
        runs.finish(ctx, run_id, "failed", report)
        raise
    finally:
        structlog.contextvars.unbind_contextvars("reconcile_run")
    runs.finish(ctx, run_id, "done", report)
    return run_id


def _execute(
    ctx: PassContext, report: PassReport, held: Held, deadline: Deadline, provider: str | None,
    account: str | None,
) -> None:
    cfg, calls = ctx.config, RedisCalls()
    accounts = ctx.in_scope(provider, account)
    breaker = Breaker(ctx.redis, cfg.redis_prefix, failures=cfg.breaker_failures,
                      cooldown_s=cfg.breaker_cooldown_s)
    _check_silence(ctx, report, accounts, calls)
    work = _claim(ctx, report, accounts, breaker, calls, held, deadline)
    budget = RateBudget(ctx.redis, cfg.redis_prefix)
    answers = ctx.run(query_all(ctx, work, breaker, budget, calls, deadline))
    _apply(ctx, report, [a for a, _o in work], answers, held, deadline)
    for acct in accounts:
        state = _breaker_state(breaker, acct.key, calls)
        report.stats(acct.key).breaker = state.value if state is not None else "unknown"
    with ctx.sessions() as session:
        report.add_ledger_state(session, ctx.now())
    _alert(ctx, report, report.alert_specs(ctx.now().date().isoformat()), calls)
    if provider is None and account is None:
        _check_credit(ctx, report, calls)
    if calls.down is not None:  # the calls it cut said nothing of their own
        log.warning("reconcile_redis_down", error=calls.down)
    totals = {k: sum(getattr(s, k) for s in report.accounts.values())
              for k in ("claimed", "queried", "skipped")}
    log.info("reconcile_pass", accounts=len(accounts), resolved=report.resolved.count,
             not_found=report.not_found.count, mismatches=report.mismatches.count,
             unresolved=report.unresolved.count, silent=len(report.silence), **totals)


def _check_silence(
    ctx: PassContext, report: PassReport, accounts: list[Account], calls: RedisCalls
) -> None:
    cfg, now = ctx.config, ctx.now()
    with ctx.sessions.begin() as session:
        for found in find_silent(session, accounts, now, cfg.silence_window_s):
            try:
                tightened = tighten(session, ctx.redis, cfg.redis_prefix, found, now,
                                    window_s=cfg.silence_window_s, calls=calls,
                                    limit=cfg.silence_bring_forward, lease_s=cfg.claim_lease_s)
            except RedisDown:  # fails before it moves an order: reported as is
                tightened = found
            except redis.RedisError as exc:
                log.warning("silence_tighten_failed", account=f"{found.provider}/{found.account}",
                            error=type(exc).__name__)
                tightened = found
            log.warning("provider_silent", account=f"{found.provider}/{found.account}",
                        window_s=cfg.silence_window_s, brought_forward=tightened.brought_forward)
            report.silence.append(tightened)


def _claim(
    ctx: PassContext, report: PassReport, accounts: list[Account], breaker: Breaker,
    calls: RedisCalls, held: Held, deadline: Deadline,
) -> list[tuple[Account, DueOrder]]:
    work: list[tuple[Account, DueOrder]] = []
    now = ctx.now()
    held.until = now + timedelta(seconds=ctx.config.claim_lease_s)
    for acct in accounts:
        deadline.check()
        stats = report.stats(acct.key)
        state = _breaker_state(breaker, acct.key, calls)
        if state is None:  # this account's failure, not the pass's: its orders stay due
            log.warning("account_skipped", account=acct.key, reason="redis")
            stats.errors["redis"] = 1
            continue
        if state is BreakerState.OPEN:
            log.warning("account_skipped", account=acct.key, reason="breaker_open")
            continue  # not even claimed: its orders stay due for the pass after the cool-down
        with ctx.sessions.begin() as session:
            due = claim_due(session, now, limit=ctx.config.per_pass(acct),
                            lease_s=ctx.config.claim_lease_s,
                            provider=acct.provider.name, account=acct.name)
        stats.claimed = len(due)
        held.ids.update(order.id for order in due)
        work.extend((acct, order) for order in due)
    return work


def _breaker_state(breaker: Breaker, account_key: str, calls: RedisCalls) -> BreakerState | None:
    """The account's breaker state, or None when Redis cannot tell."""
    try:
        return calls.call(breaker.state, account_key)
    except RedisDown:
        return None
    except redis.RedisError as exc:
        log.warning("breaker_unavailable", account=account_key, error=type(exc).__name__)
        return None


def _apply(
    ctx: PassContext, report: PassReport, accounts: list[Account], answers: list[Answer],
    held: Held, deadline: Deadline,
) -> None:
    by_account: dict[str, list[Answer]] = defaultdict(list)
    account_of: dict[str, Account] = {}
    for acct, answer in zip(accounts, answers, strict=True):
        by_account[acct.key].append(answer)
        account_of[acct.key] = acct
    cfg, now = ctx.config, ctx.now()
    for key, group in by_account.items():
        deadline.check()
        acct, polled = account_of[key], []
        schedule = cfg.schedule(acct)
        with ctx.sessions.begin() as session:
            for answer in group:
                try:
                    with session.begin_nested():
                        polled.append(apply_answer(session, acct, answer, schedule,
                                                   cfg.give_up_after_s, now))
                except Exception as exc:  # this order only; its lease brings it back
                    if out_of_time(exc):
                        raise
                    log.warning("poll_apply_failed", order_id=answer.order.id,
                                error=type(exc).__name__)
                    polled.append(Polled(answer.order, "permanent", f"apply:{type(exc).__name__}",
                                         "pending", "pending", [], []))
        held.ids.difference_update(answer.order.id for answer in group)  # committed
        report.add_polled(key, polled)


def _check_credit(ctx: PassContext, report: PassReport, calls: RedisCalls) -> None:
    """CONTRACT §6: poll the SMS credit and alert (once a UTC day) when it is below `low_credit`.

    Beat runs a pass every minute, maybe on several machines: a Redis claim lets one pass in
    `credit_check_interval_s` poll. A check that fails gives its claim back, so the next pass
    tries again; it never fails the pass."""
    sms, alerter = ctx.accounts.sms, ctx.alerter
    if sms is None or alerter is None:
        return
    key = f"{ctx.config.redis_prefix}:sms_credit_polled"
    interval = ctx.config.credit_check_interval_s
    try:
        if interval > 0 and not calls.call(ctx.redis.set, key, "1", nx=True, ex=interval):
            return
        check = ctx.run(alerter.check_credit(sms.low_credit, now=ctx.now(), calls=calls))
    except Exception as exc:
        with contextlib.suppress(redis.RedisError):
            calls.call(ctx.redis.delete, key)
        if out_of_time(exc):
            raise
        # A call cut for an outage is named by the error that found it, as when it was made.
        error = exc.cause if isinstance(exc, RedisDown) else type(exc).__name__
        log.warning("sms_credit_check_failed", error=error)
        report.tail["sms_credit"] = {"error": error}
        return
    if check.low:
        log.warning("sms_credit_low", credit=str(check.credit), threshold=str(sms.low_credit),
                    alerted=check.alerted)
    report.tail["sms_credit"] = {"credit": str(check.credit), "threshold": str(sms.low_credit),
                                 "low": check.low, "alerted": check.alerted}


def _alert(ctx: PassContext, report: PassReport, specs: list[AlertSpec], calls: RedisCalls
           ) -> None:
    """Always a log line; an SMS per incident (once, across processes) when SMS is set up."""
    for spec in specs:
        log.warning("reconcile_alert", incident=spec.incident, message=spec.message)
    alerter = ctx.alerter
    if alerter is None or not specs:
        return

    async def send_all() -> list[bool | BaseException]:
        return await asyncio.gather(
            *(alerter.alert(s.incident, s.message, calls=calls) for s in specs),
            return_exceptions=True,
        )

    for spec, result in zip(specs, ctx.run(send_all()), strict=True):
        if isinstance(result, BaseException) and out_of_time(result):
            raise result
        if isinstance(result, BaseException):
            log.warning("reconcile_alert_failed", incident=spec.incident,
                        error=type(result).__name__)
            report.alerts["failed"] += 1
        elif result:
            report.alerts["sent"].append(spec.incident)
        else:
            report.alerts["suppressed"] += 1
