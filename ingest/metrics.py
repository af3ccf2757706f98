"""Prometheus metrics of the receiver, plus gauges read from the database and Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from ledger.models import NON_FINAL, Callback

log = structlog.get_logger(__name__)


class ReceiverMetrics:
    """Counters and the ack-latency histogram, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.received = Counter(
            "payhook_callbacks_received_total",
            "Callbacks received",
            ["provider"],
            registry=self.registry,
        )
        self.acknowledged = Counter(
            "payhook_callbacks_acknowledged_total",
            "Callbacks committed and acknowledged",
            ["provider"],
            registry=self.registry,
        )
        self.refused = Counter(
            "payhook_callbacks_refused_total",
            "Callbacks answered without an ack",
            ["provider", "status"],
            registry=self.registry,
        )
        self.ack_latency = Histogram(
            "payhook_ack_latency_seconds",
            "Receipt to acknowledgement",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=self.registry,
        )
        # Per group commit (not per request): a slow commit here is PostgreSQL's WAL flush,
        # and every request of the group, and those queued behind it, wait for it.
        self.inbox_commit = Histogram(
            "payhook_inbox_commit_seconds",
            "Inbox group write + commit",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=self.registry,
        )
        self.inbox_group = Histogram(
            "payhook_inbox_group_rows",
            "Callbacks per inbox commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self._children: dict[str, ProviderCounters] = {}

    def observe_commit(self, seconds: float, rows: int) -> None:
        self.inbox_commit.observe(seconds)
        self.inbox_group.observe(rows)

    def for_provider(self, provider: str) -> ProviderCounters:
        children = self._children.get(provider)
        if children is None:
            children = ProviderCounters(self.received.labels(provider),
                                        self.acknowledged.labels(provider))
            self._children[provider] = children
        return children


@dataclass(frozen=True)
class ProviderCounters:
    """One provider's counter children, looked up once instead of on every request."""

    received: Any
    acknowledged: Any


class StateCollector(Collector):
    """Outcomes by state (from the workers' Redis counters) and the oldest non-final callback."""

    def __init__(
        self, engine: Engine, redis_client: Callable[[], redis.Redis | None], key: str
    ) -> None:
        self._engine = engine
        self._redis = redis_client
        self._key = key

    def collect(self) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            "payhook_oldest_unfinished_callback_age_seconds",
            "Age of the oldest callback not yet in a final state (0 when none)",
        )
        try:
            with self._engine.connect() as conn:
                oldest = conn.execute(
                    select(func.min(Callback.received_at)).where(Callback.state.in_(NON_FINAL))
                ).scalar()
            if isinstance(oldest, str):  # SQLite returns the aggregate as text
                oldest = datetime.fromisoformat(oldest)
            if oldest is not None and oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=UTC)
            seconds = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
            age.add_metric([], max(seconds, 0.0))
            yield age
        except Exception as exc:
            log.warning("metrics_db_failed", error=str(exc)[:120])
        outcomes = GaugeMetricFamily(
            "payhook_callback_outcomes",
            "Callbacks finished by workers, by state and reason",
            labels=["state", "reason"],
        )
        client = self._redis()
        try:
            counts: dict[bytes, bytes] = (
                client.hgetall(self._key) if client is not None else {}  # type: ignore[assignment]
            )
        except Exception as exc:
            log.warning("metrics_redis_failed", error=str(exc)[:120])
            counts = {}
        for key, value in sorted(counts.items()):
            state, _, reason = key.decode().partition("|")
            outcomes.add_metric([state, reason], float(value))
        yield outcomes
