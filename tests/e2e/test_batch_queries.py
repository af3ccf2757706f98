"""Confirming queries of a batch: claims are held to the account's shared query budget (deferred,
not failed, when it is spent or out of reach), and claims naming one order share one query."""

from __future__ import annotations

import time

import redis

from payhook.embedded import free_port
from reconcile.budget import RateBudget, window
from tests.conftest import unique
from tests.e2e.conftest import TASK
from tests.harness import Stack, store
from workers.process import process_batch
from workers.runtime import Runtime


def _spend_query_budget(runtime: Runtime, provider: str, seconds: int) -> list[str]:
    """Spend `provider`'s default-account query budget for the next `seconds`, as other
    processes would have; the Redis keys written."""
    account = runtime.accounts.get(provider, "default")
    assert account is not None
    budget = RateBudget(runtime.redis, runtime.recon_prefix)
    length, allowed = window(account.config.query_rate_per_s)
    first = int(time.time() // length)
    keys = [budget.key(account.key, slot) for slot in range(first, first + seconds // length + 1)]
    for key in keys:
        runtime.redis.set(key, allowed, ex=seconds + 5)
    return keys


def test_a_flood_of_claims_is_held_to_the_accounts_query_budget(
    stack: Stack, runtime: Runtime
) -> None:
    """Plain OPay callbacks are unsigned, so anybody can send them, and each asks OPay about
    its order. With the account's query budget spent (by other workers or the reconciliation
    pass), they wait `confirm_wait_s`, ask nothing, and are deferred without counting an
    attempt; once the budget allows, they are asked about and apply like any other."""
    world = stack.world
    orders = [unique() for _ in range(4)]
    ids = store(runtime.engine, [
        world.callback("opay", world.fields("opay", order_no, "succeeded", "5.00"), plain=True)
        for order_no in orders])
    runtime.settings = runtime.settings.model_copy(update={"confirm_wait_s": 0.3})
    keys = _spend_query_budget(runtime, "opay", 60)
    try:
        deferred = process_batch(runtime, ids, TASK)
    finally:
        runtime.redis.delete(*keys)
    assert deferred.reasons == {"processing|query:deferred": 4}
    assert sum(world.queries[("opay", order_no)] for order_no in orders) == 0
    assert {(stack.callback(i)["state"], stack.callback(i)["attempts"]) for i in ids} == {
        ("processing", 0)}

    for order_no in orders:  # genuine after all: the provider knows these orders
        world.publish("opay", world.fields("opay", order_no, "succeeded", "5.00"))
    # The default wait again: 0.3 s is less than this process's pace needs to send four.
    runtime.settings = runtime.settings.model_copy(update={"confirm_wait_s": 2.0})
    asked = process_batch(runtime, ids, TASK)
    assert asked.states == {"applied": 4}
    assert [world.queries[("opay", order_no)] for order_no in orders] == [1, 1, 1, 1]
    assert {stack.callback(i)["attempts"] for i in ids} == {1}


def test_callbacks_claiming_one_order_share_one_query(stack: Stack, runtime: Runtime) -> None:
    """Several callbacks of a batch claiming the same order (a provider repeating itself, or
    a flood naming one order) cost one status query, whose answer judges each of them."""
    world = stack.world
    order_no = unique()
    fields = world.fields("opay", order_no, "succeeded", "5.00")
    world.publish("opay", fields)
    ids = store(runtime.engine, [world.callback("opay", fields, plain=True)] * 3)
    result = process_batch(runtime, ids, TASK)
    assert result.states == {"applied": 1, "duplicate": 2}
    assert world.queries[("opay", order_no)] == 1


def test_without_the_query_budget_claims_are_deferred_not_failed(
    stack: Stack, runtime: Runtime
) -> None:
    """With Redis, which holds the shared query budget, out of reach, a claim is neither asked
    about past the budget nor failed: it is deferred, and its attempt does not count."""
    world = stack.world
    order_no = unique()
    [callback_id] = store(runtime.engine, [world.callback(
        "opay", world.fields("opay", order_no, "succeeded", "5.00"), plain=True)])
    runtime.redis.close()
    runtime.redis = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    result = process_batch(runtime, [callback_id], TASK)
    assert result.reasons == {"processing|query:deferred": 1}
    assert world.queries[("opay", order_no)] == 0
    assert stack.callback(callback_id)["attempts"] == 0
