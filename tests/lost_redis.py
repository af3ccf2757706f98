"""A Redis out of reach as a host gone from the network is: a try to connect fails only after a
while, not at once, so the calls a round makes alongside one another overlap while one fails.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

#: How long a refused try to connect takes. Refused at once (a closed port on this host), a
#: call was over before the next one began, so calls made all at once each tried Redis only
#: as often as the threads' scheduling happened to overlap them: the tests that pin "found
#: once" passed with the one-at-a-time lock of `RedisCalls.run` removed, in 3 to 5 runs of 8.
REFUSAL_S = 0.2


class SlowlyRefused(redis.Connection):
    """A real connection whose refused tries to connect take `REFUSAL_S` and are counted
    (`refusals`: every instance's, since a test set it to zero)."""

    refusals = 0
    _counting = threading.Lock()

    def _connect(self) -> socket.socket:
        try:
            return super()._connect()  # type: ignore[no-untyped-call, no-any-return]
        except OSError:
            with SlowlyRefused._counting:
                SlowlyRefused.refusals += 1
            time.sleep(REFUSAL_S)
            raise


def dead_redis() -> tuple[redis.Redis, int]:
    """A client of a closed port (refused, slowly) and how many refusals one call of it makes;
    `SlowlyRefused.refusals` is left at zero."""
    pool = redis.ConnectionPool(connection_class=SlowlyRefused, host="127.0.0.1", port=1,
                                retry=Retry(NoBackoff(), 0))  # the client's own retries: none
    dead = redis.Redis(connection_pool=pool)
    SlowlyRefused.refusals = 0
    with pytest.raises(redis.ConnectionError):
        dead.get("one call")
    per_call, SlowlyRefused.refusals = SlowlyRefused.refusals, 0
    assert per_call > 0
    return dead, per_call
