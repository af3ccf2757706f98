"""`python -m bench --quick`: its output contract, and that nothing it pushed through payhook
was lost, refused or left unfinished. No speed is asserted here: figures live in the bench."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from bench.report import TARGETS

ROOT = Path(__file__).resolve().parents[2]
# The keys the checking script reads, all numbers.
CONTRACT_KEYS = ("ack_ratio", "ack_p99_ms_500", "ack_p999_ms_500", "e2e_ratio", "growth_ratio",
                 "rss_receiver_mb", "rss_worker_mb")


def _bench_databases(url: str) -> set[str]:
    admin = make_url(url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False)) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'payhook_bench_%'")
        return {str(row[0]) for row in rows}


def _bench_keys(url: str) -> set[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return set(client.scan_iter(match="*payhook-bench-*", count=1000))
    finally:
        client.close()


def _leftovers() -> tuple[set[str], set[bytes]]:
    db, rd = os.environ.get("PAYHOOK_DATABASE_URL", ""), os.environ.get("PAYHOOK_REDIS_URL", "")
    postgres = bool(db) and make_url(db).get_backend_name() == "postgresql"
    return (_bench_databases(db) if postgres else set(), _bench_keys(rd) if rd else set())


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_quick_bench_writes_its_contract_and_loses_nothing(tmp_path: Path) -> None:
    before = _leftovers()
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc: dict[str, Any] = json.loads(out.read_text())

    for key in CONTRACT_KEYS:
        assert isinstance(doc[key], float), key
        assert math.isfinite(doc[key]), key
        assert doc[key] > 0, (key, doc[key])
    raw = doc["raw"]
    assert doc["ack_ratio"] == pytest.approx(raw["ack_rate"] / raw["echo_rate"])
    assert doc["e2e_ratio"] == pytest.approx(raw["e2e_rate"] / raw["noop_rate"])
    assert doc["quick"] is True
    assert len(doc["growth_levels"]) >= 2
    assert [t["key"] for t in doc["targets"]] == [t.key for t in TARGETS]
    # Which backends it used is what the environment asked for.
    db_set = bool(os.environ.get("PAYHOOK_DATABASE_URL", "").startswith("postgresql"))
    assert doc["database"] == ("postgresql" if db_set else "sqlite")
    assert doc["redis"] == ("PAYHOOK_REDIS_URL" if os.environ.get("PAYHOOK_REDIS_URL")
                            else "embedded")
    assert "| saturation" in done.stdout

    # Every request of every load run was answered 200, by payhook and by the references.
    for level in raw["runs"]:
        for server, runs in level["ack"]["saturation"].items():
            for run in runs:
                assert run["errors"] == 0, (server, run)
                assert set(run["statuses"]) == {"200"}, (server, run)
        for server, by_rate in level["ack"]["latency"].items():
            for runs in by_rate.values():
                for run in runs:
                    assert run["errors"] == 0, (server, run)
                assert set(run["statuses"]) == {"200"}, (server, run)
        # End to end: every callback acknowledged, and every one applied (none dead, none
        # left pending), on both stacks; the no-op reference ran every task.
        for stack, runs in level["e2e"].items():
            for run in runs:
                if stack == "noop":
                    assert run["done"] == run["count"], run
                else:
                    assert run["acked"] == run["count"], (stack, run)
                    assert run["states"] == {"applied": run["count"]}, (stack, run)

    # It removed its own database and queues.
    after = _leftovers()
    assert after[0] <= before[0]
    assert after[1] <= before[1]
