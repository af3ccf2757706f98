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
    """Runs Redis calls on threads until one fails to reach Redis; every later call raises
    `RedisDown` at once. One per round, so the next round tries Redis again. An error about one
    key (`ResponseError`: a key of the wrong type) is that call's own, and cuts nothing."""

    def __init__(self) -> None:
        self.down: str | None = None  # the error that found Redis out of reach

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(self._call, functools.partial(fn, *args, **kwargs))

    def _call(self, call: Callable[[], T]) -> T:
        # Checked on the thread, right before the call: one queued for a thread is cut too.
        if self.down is not None:
            raise RedisDown(self.down)
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.down = self.down or type(exc).__name__
            raise
