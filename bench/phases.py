"""One measurement each: saturation, open-model latency, end-to-end drain (payhook and the bare
Celery reference). Each returns plain numbers; the caller repeats and takes medians.
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select

from bench import seed
from bench.lab import Lab
from bench.noop import done_keys
from bench.traffic import make_batch, save
from ledger.models import NON_FINAL, Callback

# Enough requests in flight that the receiver's core stays busy while groups wait on their
# commit (at 32 its CPU share was ~0.85, at 128 ~0.97; 256 was slower for both servers). The
# echo server is CPU-bound from 32 on and does the same at 128.
SATURATION_CONNECTIONS = 128
LATENCY_CONNECTIONS = 64
FEED_CONNECTIONS = 16


def saturation(lab: Lab, server: str, port: int, pool: Path, duration_s: float) -> dict[str, Any]:
    """Closed-loop acks/s with every connection busy, and the CPU share the server used."""
    cpu0 = lab.cpu_seconds(server)
    result = lab.load(port, pool, mode="closed", connections=SATURATION_CONNECTIONS,
                      duration_s=duration_s, warmup_s=0.5)
    server_cpu = (lab.cpu_seconds(server) - cpu0) / (duration_s + 0.5)
    return {"rate": result["rate"], "errors": result["errors"], "statuses": result["statuses"],
            "server_cpu_share": server_cpu, "generator_cpu_share": result["cpu_share"]}


def latency(lab: Lab, server: str, port: int, pool: Path, rate: float, duration_s: float,
            offset: int = 0) -> dict[str, Any]:
    """Open model at `rate`; percentiles from each request's scheduled start. For payhook, also
    what its inbox commits did meanwhile (from its own /metrics), so a stall seen by the
    generator can be told apart: a slow commit (PostgreSQL's WAL flush) or not."""
    before = inbox_commits(port) if server == "receiver" else None
    result = lab.load(port, pool, mode="open", connections=LATENCY_CONNECTIONS, rate=rate,
                      duration_s=duration_s, offset=offset)
    keys = ("achieved_rate", "completed", "errors", "statuses", "p50_ms", "p99_ms", "p999_ms",
            "max_ms", "send_lag_p99_ms", "stalls", "slow_requests")
    out = {k: result[k] for k in keys}
    if before is not None:
        after = inbox_commits(port)
        out.update({k: after[k] - before[k] for k in after})
    return out


def inbox_commits(port: int) -> dict[str, float]:
    """The receiver's inbox commit counters so far: commits, those slower than 10 ms, rows."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {(sample.name, sample.labels.get("le")): sample.value
              for family in text_string_to_metric_families(text) for sample in family.samples}
    commits = values[("payhook_inbox_commit_seconds_count", None)]
    return {"commits": commits,
            "slow_commits": commits - values[("payhook_inbox_commit_seconds_bucket", "0.01")],
            "committed_rows": values[("payhook_inbox_group_rows_sum", None)]}


@dataclass
class Feed:
    """A prepared end-to-end batch: signed callbacks on disk, their orders registered."""

    path: Path
    count: int
    by_provider: dict[str, int]


def prepare_feed(lab: Lab, engine: Engine, name: str, count: int) -> Feed:
    batch = make_batch(lab.world, f"E{name}-", count, "127.0.0.1")
    seed.register_orders(engine, batch.orders)
    return Feed(save(batch.requests, lab.workdir / f"feed-{name}.pkl"), count, batch.by_provider)


def _final_count(engine: Engine, mark: int) -> int:
    with engine.connect() as conn:
        stmt = select(func.count()).select_from(Callback).where(
            Callback.id > mark, Callback.state.not_in(NON_FINAL))
        return int(conn.execute(stmt).scalar_one())


def end_to_end(lab: Lab, engine: Engine, port: int, feed: Feed,
               timeout_s: float) -> dict[str, Any]:
    """POST every callback, wait until every one is final; callbacks/s from first POST to the
    last `processed_at`."""
    mark = seed.callbacks_mark(engine)
    posted = lab.load(port, feed.path, pinned=False, mode="once", connections=FEED_CONNECTIONS)
    acked = int(posted["statuses"].get("200", 0))
    deadline = time.monotonic() + timeout_s
    final = 0
    while time.monotonic() < deadline:
        final = _final_count(engine, mark)
        if final >= acked:
            break
        time.sleep(0.25)
    with engine.connect() as conn:
        last = conn.execute(select(func.max(Callback.processed_at)).where(
            Callback.id > mark)).scalar_one()
        states = dict(conn.execute(select(Callback.state, func.count()).where(
            Callback.id > mark).group_by(Callback.state)).tuples().all())
    elapsed = (last.timestamp() if last else time.time()) - posted["first_wall"]
    return {"count": feed.count, "acked": acked, "final": final, "states": states,
            "post_s": posted["elapsed_s"], "elapsed_s": elapsed,
            "rate": final / elapsed if elapsed > 0 else 0.0, "complete": final >= feed.count}


def noop_drain(lab: Lab, count: int, timeout_s: float) -> dict[str, Any]:
    """Publish `count` no-op tasks and wait until the worker has run them all; tasks/s from the
    first publish to the last task's finish."""
    client = lab.backends.redis_client()
    done_key, last_key = done_keys(lab.noop_queue)
    client.delete(done_key, last_key)
    published = lab.publish_noop(count)
    deadline = time.monotonic() + timeout_s
    done = 0
    while time.monotonic() < deadline:
        done = int(client.get(done_key) or 0)
        if done >= count:
            break
        time.sleep(0.1)
    last = float(client.get(last_key) or time.time())
    client.close()
    elapsed = last - published["first_wall"]
    return {"count": count, "done": done, "publish_s": published["elapsed_s"],
            "elapsed_s": elapsed, "rate": done / elapsed if elapsed > 0 else 0.0}
