"""The per-account query budget shared by every process: a Redis counter per time window.

Each window (one second, or 1/rate seconds for rates below one a second) has its own key,
incremented per query and expired soon after, so all workers together stay within
`query_rate_per_s`. The HTTP layer's token bucket still smooths each process on its own.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis

#: How a `RateBudget.acquire` makes each take off the loop: a thread by default; a round's
#: `RedisCalls.run`, which stops once Redis is out of reach.
Run = Callable[..., Awaitable[float]]
#: The code of a query that ended because a retry got no turn or unit in time: told apart from
#: the provider's last failure, which a retry might have cured.
REFUSED = "query:budget"


def window(rate_per_s: float) -> tuple[int, int]:
    """(window length in seconds, queries allowed per window) for `rate_per_s`."""
    if rate_per_s <= 0:
        raise ValueError("rate_per_s must be positive")
    length = 1 if rate_per_s >= 1 else math.ceil(1 / rate_per_s)
    return length, max(1, int(rate_per_s * length))


class RateBudget:
    """Grants queries per account across processes; `acquire` sleeps until one is granted."""

    def __init__(
        self, client: redis.Redis, prefix: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._clock = clock

    def now(self) -> float:
        """This budget's clock: the one an `acquire` deadline is a time on."""
        return self._clock()

    def key(self, account_key: str, slot: int) -> str:
        return f"{self._prefix}:rate:{account_key}:{slot}"

    def try_take(self, account_key: str, rate_per_s: float) -> float:
        """Take one query from the current window: 0.0 if granted, else seconds to wait."""
        length, allowed = window(rate_per_s)
        now = self._clock()
        slot = int(now // length)
        pipe = self._redis.pipeline()
        pipe.incr(self.key(account_key, slot))
        pipe.expire(self.key(account_key, slot), length + 1)
        used = int(pipe.execute()[0])
        if used <= allowed:
            return 0.0
        # A refused take still counted: harmless, the window is already full.
        return max((slot + 1) * length - now, 0.001)

    async def acquire(
        self, account_key: str, rate_per_s: float, until: float | None = None,
        run: Run = asyncio.to_thread,
    ) -> bool:
        """Wait (sleeping, never spinning) until a query of `account_key` is within budget:
        True once granted; False, without waiting in vain, if that would be after `until`
        (a time on this budget's clock). `run(try_take, ...)` makes each take off the loop
        (a thread; a poll round's `RedisCalls.run`, which stops once Redis is out of reach)."""
        while True:
            wait = await run(self.try_take, account_key, rate_per_s)
            if wait == 0.0:
                return True
            if until is not None and self._clock() + wait > until:
                return False
            await asyncio.sleep(wait)


@dataclass
class BudgetCharge:
    """Charges the queries of one account to its budget, each by the deadline `until()` gives
    as it is asked (a time on the budget's clock): a `providers.http.Charge`, so a query's
    retries, their turn in this process's pace included, never hold its caller past it."""

    budget: RateBudget
    key: str
    rate: float
    until: Callable[[], float]
    run: Run = asyncio.to_thread

    def bound_s(self) -> float:
        return max(0.0, self.until() - self.budget.now())

    async def __call__(self, within_s: float) -> bool:
        until = self.budget.now() + within_s
        return await self.budget.acquire(self.key, self.rate, until=until, run=self.run)
