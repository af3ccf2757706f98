"""The HTTP layer every status-query client shares: one session per event loop, timeouts,
retries with exponential backoff and full jitter, and a per-account token-bucket rate limit.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
import structlog

from providers.base import Headers, HttpReply, HttpRequest, QueryTransport
from providers.errors import QueryPermanent, QueryRefused, QueryTransient

log = structlog.get_logger(__name__)

#: Statuses worth another try: the provider is throttling us or is itself in trouble.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))


class Charge(Protocol):
    """Takes a query from the budget every process shares (reconcile.budget), within a bound: a
    retry is a query to the provider like any other, and its caller holds something while it
    waits (a poll its slot, a confirming batch its worker), so the wait must end in time."""

    def bound_s(self) -> float:
        """The longest the query, asked now, may still wait: for its turn in this process's
        pace and its unit of the budget together."""
        ...

    async def __call__(self, within_s: float) -> bool:
        """Take one unit, waiting at most `within_s`: True once granted; False, without waiting
        in vain, if none can be had in time."""
        ...


class TokenBucket:
    """An async token bucket: `rate_per_s` tokens a second, at most `burst` saved up.

    A caller reserves a token synchronously (so no await splits the read from the update) and
    then sleeps until its token is due; tokens may go negative, which queues callers fairly
    without a lock held across a sleep and without polling.
    """

    def __init__(self, rate_per_s: float, burst: int = 1) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        # One bucket may be shared by several threads each running its own loop.
        self._mutex = threading.Lock()

    def reserve(self) -> float:
        """Take one token; the seconds to wait before using it (0 when one was available)."""
        delay = self._take(math.inf)
        assert delay is not None  # no token is due later than that
        return delay

    def _take(self, max_wait_s: float) -> float | None:
        """Take one token due within `max_wait_s`: the seconds to wait before using it, or None,
        taking none, if it would be due later."""
        with self._mutex:
            now = time.monotonic()
            tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate_per_s)
            delay = max(0.0, (1.0 - tokens) / self.rate_per_s)
            self._stamp = now
            taken = delay <= max_wait_s
            self._tokens = tokens - 1.0 if taken else tokens
            return delay if taken else None

    async def acquire(self) -> None:
        """Wait (sleeping, never spinning) until a token is ours."""
        await self.acquire_within(math.inf)

    async def acquire_within(self, max_wait_s: float) -> bool:
        """Wait, as `acquire`, for a token due within `max_wait_s`: True once it is ours; False
        at once, taking none, if it would be due later."""
        delay = self._take(max_wait_s)
        if delay is None:
            return False
        if delay > 0:
            await asyncio.sleep(delay)
        return True

    def refund(self) -> None:
        """Give back a token taken for a request that was not sent after all (the shared budget
        refused it), so the requests after it do not wait for a turn nobody used."""
        with self._mutex:
            self._tokens = min(float(self.burst), self._tokens + 1.0)


async def admitted(bucket: TokenBucket | None, charge: Charge) -> bool:
    """Whether a query may go out within `charge`'s bound: its turn in this process's pace
    first, then its unit of the shared budget, right before it is sent (a unit taken before the
    pace's wait could be spent in a later window, with other waiters', in a burst over the
    rate). Either out of reach in time, nothing is sent, so the pace's turn goes back."""
    bound, start = charge.bound_s(), time.monotonic()
    if bucket is not None and not await bucket.acquire_within(bound):
        return False
    granted = False
    try:
        granted = await charge(max(0.0, bound - (time.monotonic() - start)))
    finally:
        if not granted and bucket is not None:
            bucket.refund()
    return granted


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a request gets and how long to back off between them."""

    attempts: int = 4
    backoff_base_s: float = 0.2
    backoff_max_s: float = 5.0

    def delay(self, failed_attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**(n-1))] after the n-th failure."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (failed_attempt - 1))
        return random.uniform(0.0, ceiling)


class _AttemptFailed(Exception):
    """One attempt failed in a way another attempt may fix; `reason` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class QueryHttp:
    """Owns the aiohttp sessions (one per process and event loop) and the rate-limit buckets."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 5.0,
        total_timeout_s: float = 15.0,
        retry: RetryPolicy | None = None,
        burst: int = 1,
    ) -> None:
        self.timeout = aiohttp.ClientTimeout(total=total_timeout_s, connect=connect_timeout_s)
        self.retry = retry or RetryPolicy()
        if self.retry.attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}
        self._buckets_mutex = threading.Lock()
        self._pid = os.getpid()
        self._sessions: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, aiohttp.ClientSession
        ] = weakref.WeakKeyDictionary()

    def session(self) -> aiohttp.ClientSession:
        """The running loop's session, created on first use (must be called inside a loop)."""
        loop = asyncio.get_running_loop()
        if self._pid != os.getpid():
            # A forked child must not touch the parent's sockets.
            self._sessions = weakref.WeakKeyDictionary()
            self._pid = os.getpid()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            session = aiohttp.ClientSession(timeout=self.timeout)
            self._sessions[loop] = session
        return session

    async def close(self) -> None:
        """Close the running loop's session (the others belong to loops we cannot drive)."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None and not session.closed:
            await session.close()

    def bucket(self, key: str, rate_per_s: float) -> TokenBucket:
        """The rate-limit bucket of `key`; the first caller's rate sets it."""
        with self._buckets_mutex:
            found = self._buckets.get(key)
            if found is None:
                found = TokenBucket(rate_per_s, self.burst)
                self._buckets[key] = found
            return found

    def for_account(
        self, key: str, rate_per_s: float, charge_retry: Charge | None = None,
        *, paced: bool = False,
    ) -> QueryTransport:
        """A transport bound to the rate-limit bucket of `key` (the same key, the same bucket);
        each retry waits its turn in the bucket, then, if `charge_retry` is given, is charged to
        the shared budget by it, both within its bound (the caller charged the first attempt).
        `paced`: the caller waited the first attempt's turn too, and it goes out at once."""
        return AccountTransport(self, self.bucket(key, rate_per_s), charge_retry, paced)

    async def send(
        self, request: HttpRequest, bucket: TokenBucket | None = None,
        charge_retry: Charge | None = None, paced: bool = False,
    ) -> HttpReply:
        """Send with retries: 2xx and 4xx but 429 are returned; the rest end in QueryTransient,
        QueryRefused when a retry's turn in `bucket` or unit from `charge_retry` is not to be had
        within the charge's bound. `paced`: the first attempt's turn in `bucket` was already
        waited for."""
        parts = urlsplit(request.url)
        where = {"method": request.method, "host": parts.netloc, "path": parts.path}
        attempts = self.retry.attempts
        reason = ""
        for attempt in range(1, attempts + 1):
            if attempt > 1 and charge_retry is not None:
                if not await admitted(bucket, charge_retry):
                    raise QueryRefused(
                        f"{request.method} {parts.netloc}{parts.path}: {reason} after "
                        f"{attempt - 1} attempts (no query budget for a retry in time)",
                        code=reason,
                    )
            elif bucket is not None and (attempt > 1 or not paced):
                await bucket.acquire()
            try:
                return await self._attempt(request)
            except _AttemptFailed as exc:
                reason = exc.reason
            log.warning(
                "query_attempt_failed", **where, reason=reason, attempt=attempt, attempts=attempts
            )
            if attempt < attempts:
                await asyncio.sleep(self.retry.delay(attempt))
        raise QueryTransient(
            f"{request.method} {parts.netloc}{parts.path}: {reason} after {attempts} attempts",
            code=reason,
        )

    async def _attempt(self, request: HttpRequest) -> HttpReply:
        try:
            async with self.session().request(
                request.method,
                request.url,
                headers=dict(request.headers),
                data=request.body if request.body else None,
                timeout=self.timeout,
            ) as response:
                body = await response.read()
        except aiohttp.InvalidURL as exc:
            raise QueryPermanent(f"invalid URL for {request.method}", code="invalid_url") from exc
        except TimeoutError as exc:
            raise _AttemptFailed("timeout") from exc
        except aiohttp.ClientError as exc:
            raise _AttemptFailed(type(exc).__name__) from exc
        if response.status in RETRY_STATUSES:
            raise _AttemptFailed(f"http_{response.status}")
        return HttpReply(
            status=response.status, body=body, headers=Headers(list(response.headers.items()))
        )


class AccountTransport:
    """A `QueryTransport` for one account: the shared `QueryHttp` plus that account's bucket."""

    def __init__(
        self, http: QueryHttp, bucket: TokenBucket, charge_retry: Charge | None = None,
        paced: bool = False,
    ) -> None:
        self.http = http
        self.bucket = bucket
        self.charge_retry = charge_retry
        self.paced = paced

    async def send(self, request: HttpRequest) -> HttpReply:
        return await self.http.send(request, self.bucket, self.charge_retry, self.paced)
