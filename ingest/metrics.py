"""Prometheus metrics of the receiver, plus gauges read from the database and Redis."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import Engine, func, select

from ledger.models import NON_FINAL, Callback

log = structlog.get_logger(__name__)


ACK_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


class ReceiverMetrics:
    """The receiver's metrics, in a registry of their own (one per app).

    What every callback touches (received and acknowledged per provider, the ack latency) is
    kept in `AckTally`, plain numbers changed only on the event loop's thread: prometheus_client's
    Counter and Histogram take a lock per change, ~3 us per request together on this machine, on
    the one thread every ack goes through. The rest (refusals, per-group inbox timings from the
    writers) uses prometheus_client's own types."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.acks = AckTally(ACK_BUCKETS)
        self.registry.register(self.acks)
        self.refused = Counter(
            "payhook_callbacks_refused_total",
            "Callbacks answered without an ack",
            ["provider", "status"],
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

        # Committed ids the dispatcher did not publish (Redis down or hanging, its backlog
        # full): not lost, the sweeper sends them after its deadline; a rising count is a
        # broker outage's size, and the delay those callbacks wait.
        self.dispatch_dropped = Counter(
            "payhook_dispatch_dropped_total",
            "Committed callback ids left to the sweeper instead of published",
            ["reason"],
            registry=self.registry,
        )
        self.dispatch_pending = Gauge(
            "payhook_dispatch_pending_ids",
            "Committed callback ids waiting to be published",
            registry=self.registry,
        )

    def count_dropped(self, reason: str, count: int) -> None:
        self.dispatch_dropped.labels(reason).inc(count)

    def observe_commit(self, seconds: float, rows: int) -> None:
        self.inbox_commit.observe(seconds)
        self.inbox_group.observe(rows)


@dataclass(slots=True)
class ProviderTally:
    """One provider's callbacks so far."""

    received: int = 0
    acknowledged: int = 0


class AckTally(Collector):
    """Counts per provider and the ack-latency histogram, for one event loop's thread to change
    without a lock. A scrape (from another thread) reads a snapshot: each number is one the loop
    wrote; the histogram's buckets and count come from one copy of the counts, its sum may be a
    few observations apart from them."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self._bounds = buckets
        self._counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._providers: dict[str, ProviderTally] = {}

    def provider(self, name: str) -> ProviderTally:
        tally = self._providers.get(name)
        if tally is None:
            tally = self._providers[name] = ProviderTally()
        return tally

    def observe(self, seconds: float) -> None:
        """One acknowledged callback, `seconds` after it arrived."""
        self._counts[bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def collect(self) -> Iterator[Metric]:
        providers = list(self._providers.items())
        received = CounterMetricFamily(
            "payhook_callbacks_received", "Callbacks received", labels=["provider"])
        acknowledged = CounterMetricFamily(
            "payhook_callbacks_acknowledged", "Callbacks committed and acknowledged",
            labels=["provider"])
        for name, tally in providers:
            received.add_metric([name], tally.received)
            acknowledged.add_metric([name], tally.acknowledged)
        yield received
        yield acknowledged
        counts, total = list(self._counts), 0
        buckets = []
        for bound, count in zip((*map(floatToGoString, self._bounds), "+Inf"), counts,
                                strict=True):
            total += count
            buckets.append((bound, total))
        yield HistogramMetricFamily(
            "payhook_ack_latency_seconds", "Receipt to acknowledgement", buckets=buckets,
            sum_value=self._sum)


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
