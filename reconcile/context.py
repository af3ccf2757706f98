"""What a reconciliation pass runs with: its tunables (`ReconcileConfig`) and its resources
(`PassContext`), built by the worker from its Runtime or by the CLI on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import redis
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session, sessionmaker

from payhook.accounts import Account, Accounts
from providers.http import QueryHttp
from reconcile.alerts import Alerter
from reconcile.sms import Sssms88Client

T = TypeVar("T")

#: A worker's pass told to stop: Celery's soft time limit, raised in a prefork child by a signal
#: handler (SIGUSR1) at whatever line runs: a coroutine, the event loop's wait, a transaction.
#: Only `runner.run_pass` handles it; the code between lets it through (`except OutOfTime:
#: raise` ahead of any `except Exception`).
OutOfTime = SoftTimeLimitExceeded


@dataclass(frozen=True)
class Deadline:
    """The `time.monotonic()` past which a pass sends no new query and stops as on `OutOfTime`
    (None: never). The signal alone is not enough: landing in one of asyncio's own callbacks
    rather than in a task, it is logged and dropped by the loop, and the pass ran on to the
    hard kill. A clock compare, cheap enough to check before every query."""

    at: float | None = None

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        return cls(None if seconds is None else time.monotonic() + seconds)

    def check(self) -> None:
        """Raise `OutOfTime` once the deadline has passed."""
        if self.at is not None and time.monotonic() >= self.at:
            raise OutOfTime("reconcile pass deadline")


#: CONTRACT §6: per-order backoff between status queries, the last step repeating.
DEFAULT_BACKOFF_S: tuple[int, ...] = (300, 900, 3600, 6 * 3600, 24 * 3600)


class CoroutineRunner(Protocol):
    """Runs a coroutine to completion from synchronous code (the worker's `Runtime.run`)."""

    def __call__(self, coro: Coroutine[Any, Any, T], /) -> T: ...


def run_to_end(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """`coro` run on `loop`, which is left with nothing running. An exception raised in the loop
    itself (`OutOfTime` while it waits) leaves the coroutine's tasks pending: they are
    cancelled, or the next run on this loop would resume them, queries and all."""
    try:
        return loop.run_until_complete(coro)
    except BaseException:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        raise


def utc_now() -> datetime:
    return datetime.now(UTC)


def recon_prefix(queue: str) -> str:
    """The Redis prefix of the reconciliation state (query budgets, breakers, claims) that
    every process of the deployment on `queue` shares: workers, beat's passes, the CLI."""
    return f"{queue}:recon"


@dataclass(frozen=True)
class ReconcileConfig:
    """Tunables of a pass; `from_settings` reads `reconcile_*` settings where they exist."""

    backoff_s: tuple[int, ...] = DEFAULT_BACKOFF_S
    give_up_after_s: int = 7 * 86400
    #: A claimed order is not due again for this long, so a crashed pass cannot lose it.
    claim_lease_s: int = 600
    #: Orders claimed per account and pass: min(max_per_account, rate * pass_budget_s).
    max_per_account: int = 500
    pass_budget_s: float = 30.0
    concurrency: int = 16
    breaker_failures: int = 5
    breaker_cooldown_s: int = 300
    silence_window_s: int = 900
    silence_bring_forward: int = 50
    report_refs: int = 50
    #: The SMS credit is polled by at most one pass in this long, whichever process runs it.
    credit_check_interval_s: int = 900
    #: A run still `running` this long after it started is abandoned (its process was killed
    #: or lost). from_settings: the visibility timeout, which the task time limit stays below.
    stale_run_after_s: int = 600
    redis_prefix: str = recon_prefix("payhook")  # from_settings: PAYHOOK_QUEUE's
    #: A pass sends no new query this long after it started, and stops as told to by the soft
    #: time limit (None: never). from_settings: the soft time limit, which it backs up.
    time_limit_s: float | None = None

    @classmethod
    def from_settings(cls, settings: object) -> ReconcileConfig:
        """Defaults, overridden by `settings.reconcile_<name>` for every name it defines."""
        base = cls()
        values: dict[str, Any] = {}
        for name in ("give_up_after_s", "claim_lease_s", "max_per_account", "pass_budget_s",
                     "concurrency", "breaker_failures", "breaker_cooldown_s",
                     "silence_window_s", "silence_bring_forward", "report_refs",
                     "credit_check_interval_s"):
            value = getattr(settings, f"reconcile_{name}", None)
            if value is not None:
                values[name] = type(getattr(base, name))(value)
        backoff = getattr(settings, "reconcile_backoff_s", None)
        if backoff:
            values["backoff_s"] = tuple(int(s) for s in backoff)
        visibility = getattr(settings, "visibility_timeout_s", None)
        if visibility is not None:  # no worker's pass outlives it: the time limit kills it first
            values["stale_run_after_s"] = int(visibility)
        soft_limit = getattr(settings, "reconcile_soft_time_limit_s", None)
        if soft_limit is not None:
            values["time_limit_s"] = float(soft_limit)
        queue = getattr(settings, "queue", None)
        if queue:  # the deployment's shared budgets and breakers, whichever process runs a pass
            values["redis_prefix"] = recon_prefix(queue)
        return cls(**values)

    def schedule(self, account: Account) -> tuple[int, ...]:
        """`account`'s backoff: its own `poll_backoff_s`, else the configured default."""
        return account.config.poll_backoff_s or self.backoff_s

    def per_pass(self, account: Account) -> int:
        """How many of `account`'s due orders one pass claims: what its rate allows in budget."""
        by_rate = int(account.config.query_rate_per_s * self.pass_budget_s)
        return max(1, min(self.max_per_account, by_rate))


@dataclass
class PassContext:
    """The resources of a pass. `run` drives coroutines from sync code; `now` is the clock."""

    sessions: sessionmaker[Session]
    accounts: Accounts
    http: QueryHttp
    redis: redis.Redis
    run: CoroutineRunner
    config: ReconcileConfig = field(default_factory=ReconcileConfig)
    now: Callable[[], datetime] = utc_now
    #: None: built from `accounts.sms` when SMS is configured, else alerts are log lines only.
    alerter: Alerter | None = None

    def __post_init__(self) -> None:
        sms = self.accounts.sms
        if self.alerter is None and sms is not None:
            secrets = [s.get_secret_value() for s in (sms.password, sms.api_key, sms.api_secret)]
            client = Sssms88Client.from_http(sms, self.http)
            self.alerter = Alerter(client, self.redis, self.config.redis_prefix, secrets=secrets)

    def in_scope(self, provider: str | None, account: str | None) -> list[Account]:
        """Configured accounts matching the filters, in a stable order."""
        return [
            acct
            for (prov, name), acct in sorted(self.accounts.by_key.items())
            if (provider is None or prov == provider) and (account is None or name == account)
        ]
