"""Attempts of a batch: one that kills its worker (or fails with an error no retry cures) splits
the batch, the neighbours apply and the culprit alone ends `dead`; an attempt running in
another task is left to it; an error a retry can cure is not taken for a death."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

import workers.judging
from ledger.models import Callback
from tests.conftest import unique
from tests.e2e.conftest import TASK, set_row, sound
from tests.harness import Stack, store
from workers.process import BatchResult, process_batch
from workers.runtime import Runtime


def _breaks_on(monkeypatch: pytest.MonkeyPatch, culprit: int) -> None:
    """Judging `culprit` raises an error no retry cures (an adapter bug); the rest as ever."""
    judge = workers.judging.judge

    def breaks_on_the_culprit(rt: Runtime, cb: Callback) -> workers.judging.Verdict:
        if cb.id == culprit:
            raise KeyError("an adapter bug")
        return judge(rt, cb)

    monkeypatch.setattr(workers.judging, "judge", breaks_on_the_culprit)


class WorkerDied(BaseException):
    """Stands for the worker process dying mid-attempt: like SIGKILL, nothing after it runs,
    not even an `except Exception`."""


def _each_alone_until_the_culprit_is_dead(
    runtime: Runtime, ids: list[int], culprit: int, error: type[BaseException]
) -> BatchResult:
    """Send each callback of a split batch again alone, each in its own task, as the task does:
    the neighbours apply at once; the culprit fails with `error` until `max_attempts` (3)
    attempts have started. A worker's death is redelivered under its task's id; a task that
    failed is sent again by the sweeper, as a new task. The result of the attempt after the
    last, which must not judge the culprit again."""
    for callback_id in ids:
        if callback_id != culprit:
            assert process_batch(runtime, [callback_id], f"alone-{callback_id}").states == {
                "applied": 1}
    for attempt in range(1, runtime.settings.max_attempts + 1):
        task = f"alone-{culprit}" if error is WorkerDied else f"swept-{attempt}"
        with pytest.raises(error):
            process_batch(runtime, [culprit], task)
        assert _attempts(runtime, culprit) == attempt
    task = f"alone-{culprit}" if error is WorkerDied else "swept-last"
    return process_batch(runtime, [culprit], task)


def _attempts(runtime: Runtime, callback_id: int) -> int:
    with Session(runtime.engine) as session:
        return session.get_one(Callback, callback_id).attempts


def test_a_callback_that_kills_its_worker_ends_dead_alone(
    stack: Stack, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first death takes its batch with it; redelivered, the batch is split and each
    callback sent alone, with the batch's attempt given back (which one killed it is not
    known), so its neighbours apply. Alone, the killer is attempted `max_attempts` (3) times,
    then ends `dead` with reason `worker_lost` without being judged again."""
    world = stack.world
    requests = [world.callback("opay", world.fields("opay", unique(), "succeeded", "5.00"))
                for _ in range(5)]
    ids = store(runtime.engine, requests)
    killer = ids[2]
    judged: list[int] = []
    judge = workers.judging.judge

    def dies_on_the_killer(rt: Runtime, cb: Callback) -> workers.judging.Verdict:
        judged.append(cb.id)
        if cb.id == killer:
            raise WorkerDied
        return judge(rt, cb)

    monkeypatch.setattr(workers.judging, "judge", dies_on_the_killer)
    with pytest.raises(WorkerDied):
        process_batch(runtime, ids, TASK)
    assert {stack.callback(i)["attempts"] for i in ids} == {1}

    redelivered = process_batch(runtime, ids, TASK)
    assert redelivered.split == ids
    assert redelivered.states == {}
    assert judged == ids[:3]  # the redelivery judged nothing

    final = _each_alone_until_the_culprit_is_dead(runtime, ids, killer, WorkerDied)
    assert final.states == {"dead": 1}
    assert final.reasons == {"dead|worker_lost": 1}
    assert judged.count(killer) == 1 + 3

    records = {i: stack.callback(i) for i in ids}
    assert (records[killer]["state"], records[killer]["reason"]) == ("dead", "worker_lost")
    assert records[killer]["attempts"] == 3
    assert [records[i]["state"] for i in ids if i != killer] == ["applied"] * 4
    assert [records[i]["attempts"] for i in ids if i != killer] == [1] * 4


def test_an_unexpected_error_is_taken_for_a_death_and_ends_the_culprit_dead_alone(
    stack: Stack, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error no retry can cure (a bug, an input nothing foresaw) used to release the
    attempt and fail the task: the sweeper then sent the same batch again, for ever, and its
    neighbours never finished. Now the batch is split at once, the neighbours apply, and the
    culprit, tried alone, ends `dead` after `max_attempts` (3)."""
    ids = sound(stack, runtime, 4)
    culprit = ids[1]
    _breaks_on(monkeypatch, culprit)
    first = process_batch(runtime, ids, TASK)
    assert (first.split, first.states) == (ids, {})
    assert [_attempts(runtime, i) for i in ids] == [0] * 4  # given back: no one's fault yet
    final = _each_alone_until_the_culprit_is_dead(runtime, ids, culprit, KeyError)
    assert final.reasons == {"dead|worker_lost": 1}
    records = {i: stack.callback(i) for i in ids}
    assert (records[culprit]["state"], records[culprit]["attempts"]) == ("dead", 3)
    assert [records[i]["state"] for i in ids if i != culprit] == ["applied"] * 3


def test_a_copy_of_a_running_attempt_leaves_the_callback_to_it(
    stack: Stack, runtime: Runtime
) -> None:
    """A second task for a callback whose attempt runs in another task (a late retry the
    sweeper also sent, a split of a batch still running) used to take that attempt for a death:
    on its last attempt the callback ended `dead` while the first task was applying it, or
    else a second attempt ran beside the first. Now the copy leaves it to the running task and
    processes the rest; a claim past the task time limit is over, and counts as a death."""
    ids = sound(stack, runtime, 2)
    running = ids[0]
    now = datetime.now(UTC)
    set_row(runtime, running, state="processing", attempts=3, claimed_at=now,
         claimed_by="the-running-task")

    copy = process_batch(runtime, ids, "a-copy")
    assert (copy.split, copy.states) == ([], {"applied": 1})
    record = stack.callback(running)
    assert (record["state"], record["attempts"]) == ("processing", 3)
    assert process_batch(runtime, [running], "another-copy").states == {}
    assert _attempts(runtime, running) == 3

    # The running task itself, redelivered after its worker died, knows its claim is over.
    assert process_batch(runtime, [running], "the-running-task").reasons == {
        "dead|worker_lost": 1}

    [stale] = sound(stack, runtime, 1)
    limit = timedelta(seconds=runtime.settings.task_time_limit_s)
    set_row(runtime, stale, state="processing", attempts=3, claimed_at=now - limit - limit / 10,
         claimed_by="a-task-long-gone")
    assert process_batch(runtime, [stale], "the-sweepers-copy").reasons == {
        "dead|worker_lost": 1}


def test_a_batch_taken_for_a_death_does_not_cost_its_neighbours_their_last_attempt(
    stack: Stack, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose attempt fails with an unforeseen error is split; the attempt was no one
    callback's fault, so each gets it back. Before, a neighbour on its last attempt, sent
    alone, found the attempt unfinished and ended `dead` though it was sound."""
    ids = sound(stack, runtime, 2)
    culprit, neighbour = ids
    set_row(runtime, neighbour, state="processing", attempts=2)
    _breaks_on(monkeypatch, culprit)
    assert process_batch(runtime, ids, TASK).split == ids
    assert (_attempts(runtime, culprit), _attempts(runtime, neighbour)) == (0, 2)
    assert process_batch(runtime, [neighbour], "alone").states == {"applied": 1}
    assert _attempts(runtime, neighbour) == 3


def test_an_attempt_that_fails_with_an_error_is_not_taken_for_a_dead_worker(
    stack: Stack, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error the task sees (the database dropping mid-attempt, say) ends the attempt; the
    task's retry then processes the batch whole, not split into single tasks."""
    ids = sound(stack, runtime, 3)
    judge = workers.judging.judge

    def fails_once(rt: Runtime, cb: Callback) -> workers.judging.Verdict:
        monkeypatch.setattr(workers.judging, "judge", judge)
        raise OperationalError("SELECT 1", {}, Exception("connection lost"))

    monkeypatch.setattr(workers.judging, "judge", fails_once)
    with pytest.raises(OperationalError):
        process_batch(runtime, ids, TASK)
    retried = process_batch(runtime, ids, TASK)
    assert retried.split == []
    assert retried.states == {"applied": 3}
    assert [stack.callback(i)["attempts"] for i in ids] == [2, 2, 2]


def test_a_callback_for_an_account_this_worker_does_not_know_is_retried_not_rejected(
    stack: Stack, runtime: Runtime
) -> None:
    """A receiver acknowledged it, so some configuration has the account (a rolling deploy
    reaches this worker later): retried, then `dead` and replayable, never `rejected`."""
    [callback_id] = sound(stack, runtime, 1)
    set_row(runtime, callback_id, account="eu")
    first = process_batch(runtime, [callback_id], TASK)
    assert first.reasons == {"processing|account_unknown": 1}
    assert sum(len(ids) for ids in first.retry.values()) == 1
    for _ in range(2):
        last = process_batch(runtime, [callback_id], TASK)
    assert last.reasons == {"dead|account_unknown": 1}
    record = stack.callback(callback_id)
    assert (record["state"], record["reason"], record["attempts"]) == ("dead", "account_unknown", 3)
