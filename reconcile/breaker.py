"""The per-account circuit breaker on provider status queries, shared through Redis.

Closed: queries flow; consecutive transient failures (busy, unreachable) are counted and a
success resets the count. At `failures` it opens for `cooldown_s`: the account's orders are not
queried. After the cool-down it is half-open: one process wins a single probe; its success
closes the breaker, its failure opens it again.
"""

from __future__ import annotations

from enum import StrEnum

import redis


class BreakerState(StrEnum):
    """Where an account's breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    """One breaker per account key (`provider/account`), its state in Redis."""

    def __init__(
        self, client: redis.Redis, prefix: str, *, failures: int = 5, cooldown_s: int = 300
    ) -> None:
        if failures < 1 or cooldown_s < 1:
            raise ValueError("failures and cooldown_s must be at least 1")
        self._redis = client
        self._prefix = prefix
        self.failures = failures
        self.cooldown_s = cooldown_s

    def _key(self, account_key: str, part: str) -> str:
        return f"{self._prefix}:breaker:{account_key}:{part}"

    def state(self, account_key: str) -> BreakerState:
        """The breaker's state now."""
        pipe = self._redis.pipeline()
        pipe.exists(self._key(account_key, "open"))
        pipe.get(self._key(account_key, "fails"))
        is_open, fails = pipe.execute()
        if is_open:
            return BreakerState.OPEN
        if fails is not None and int(fails) >= self.failures:
            return BreakerState.HALF_OPEN
        return BreakerState.CLOSED

    def allow(self, account_key: str) -> bool:
        """Whether a query may go out now: always when closed, once per cool-down half-open."""
        state = self.state(account_key)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        probe = self._redis.set(self._key(account_key, "probe"), "1", nx=True, ex=self.cooldown_s)
        return bool(probe)

    def record_success(self, account_key: str) -> None:
        """The provider answered: the breaker closes."""
        self._redis.delete(
            self._key(account_key, "fails"),
            self._key(account_key, "probe"),
            self._key(account_key, "open"),
        )

    def record_failure(self, account_key: str) -> bool:
        """A transient failure; True when this one opened the breaker."""
        fails_key = self._key(account_key, "fails")
        pipe = self._redis.pipeline()
        pipe.incr(fails_key)
        # Failures far apart are not "consecutive": the count forgets after a few cool-downs.
        pipe.expire(fails_key, self.cooldown_s * 4)
        fails = int(pipe.execute()[0])
        if fails < self.failures:
            return False
        opened = self._redis.set(self._key(account_key, "open"), "1", nx=True, ex=self.cooldown_s)
        self._redis.delete(self._key(account_key, "probe"))
        return bool(opened)
