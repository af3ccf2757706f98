"""The receiver's lock-free ack tally, read through prometheus_client's own exposition."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ingest.metrics import ReceiverMetrics


def _samples(metrics: ReceiverMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_ack_tally_exposes_counters_and_a_cumulative_histogram() -> None:
    metrics = ReceiverMetrics()
    opay, mtpay = metrics.acks.provider("opay"), metrics.acks.provider("mtpay")
    opay.received += 3
    opay.acknowledged += 2
    mtpay.received += 1
    assert metrics.acks.provider("opay") is opay
    for seconds in (0.0004, 0.0005, 0.003, 7.0):  # a bound itself falls in its own bucket
        metrics.acks.observe(seconds)
    samples = _samples(metrics)
    assert samples[("payhook_callbacks_received_total", (("provider", "opay"),))] == 3
    assert samples[("payhook_callbacks_received_total", (("provider", "mtpay"),))] == 1
    assert samples[("payhook_callbacks_acknowledged_total", (("provider", "opay"),))] == 2
    assert samples[("payhook_callbacks_acknowledged_total", (("provider", "mtpay"),))] == 0

    def bucket(le: str) -> float:
        return samples[("payhook_ack_latency_seconds_bucket", (("le", le),))]

    assert [bucket(le) for le in ("0.0005", "0.001", "0.005", "5.0", "+Inf")] == [2, 2, 3, 3, 4]
    assert samples[("payhook_ack_latency_seconds_count", ())] == 4
    assert abs(samples[("payhook_ack_latency_seconds_sum", ())] - 7.0039) < 1e-9
