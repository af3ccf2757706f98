"""A query round's calls to Redis (the query budget, the breaker), cut short once Redis is found
out of reach: each call would otherwise pay the client's own retries, seconds, before failing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import redis

P = ParamSpec("P")
T = TypeVar("T")


class RedisDown(redis.ConnectionError):
    """Raised instead of calling Redis once the round has found it out of reach; `cause` names
    the error that did."""

    def __init__(self, cause: str) -> None:
        super().__init__(f"Redis out of reach earlier in this round ({cause})")
        self.cause = cause


class RedisCalls:
    """Runs Redis calls until one fails to reach Redis; every later call raises `RedisDown` at
    once. One per round (a pass, a batch of confirming queries), so the next tries Redis again.
    An error about one key (`ResponseError`: a key of the wrong type) is that call's own, and
    cuts nothing."""

    def __init__(self) -> None:
        self.down: str | None = None  # the error that found Redis out of reach
        self._one_at_a_time = asyncio.Lock()

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on a thread (for a caller on an event loop), one call at a time:
        while Redis answers each is a round trip, and once it is out of reach only the first
        pays the client's retries, not every call started alongside it (on threads, those would
        each try before any had failed)."""
        async with self._one_at_a_time:
            return await asyncio.to_thread(self.call, functools.partial(fn, *args, **kwargs))

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` here, unless Redis was found out of reach already."""
        # Checked right before the call (on the thread, for `run`): one queued is cut too.
        if self.down is not None:
            raise RedisDown(self.down)
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.down = self.down or type(exc).__name__
            raise
