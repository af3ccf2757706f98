"""A run's measurements turned into its figures: medians per level, growth ratios side by side,
the ratios to the references, and the verdicts against the targets (the JSON document)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from bench.plan import RATES, Plan
from bench.report import machine, med, verdicts
from bench.stack import Backends


def ack_label(stack: str) -> str:
    """The key a stack's receiver runs are stored under in a level's ack results (the main
    stack's is "receiver", beside "echo"; its end-to-end runs are under "payhook")."""
    return "receiver" if stack == "payhook" else stack


def summarise(plan: Plan, quick: bool, backends: Backends, levels: list[dict[str, Any]],
               rss: dict[str, float]) -> dict[str, Any]:
    def level_figures(level: dict[str, Any], stack: str = "payhook") -> dict[str, Any]:
        server = ack_label(stack)
        sat, lat = level["ack"]["saturation"][server], level["ack"]["latency"][server]
        return {
            "orders": level["orders"] if stack == "payhook" else level["base_orders"],
            "ack_rate": med([r["rate"] for r in sat]),
            **{f"{q}_ms_{rate}": med([r[f"{q}_ms"] for r in lat[rate]])
               for rate in RATES for q in ("p50", "p99", "p999")},
            "e2e_rate": med([r["rate"] for r in level["e2e"][stack]]),
            # Over all of the level's latency runs: the generator's stalls (requests > 10 ms,
            # 50 ms apart counted once) and the inbox commits that took > 10 ms meanwhile.
            **{key: sum(r[key] for rate in RATES for r in lat[rate])
               for key in ("stalls", "slow_commits", "commits")},
            "latency_runs": sum(len(lat[rate]) for rate in RATES),
        }

    def growth_of(large: dict[str, Any], small: dict[str, Any]) -> dict[str, float]:
        """Cost on the larger ledger ÷ cost on the smallest, measured in the same minutes."""
        return {
            "ack_p99_ms_500": large["p99_ms_500"] / small["p99_ms_500"],
            "ack_p99_ms_1000": large["p99_ms_1000"] / small["p99_ms_1000"],
            "e2e_rate": small["e2e_rate"] / large["e2e_rate"],
            "ack_rate (info)": small["ack_rate"] / large["ack_rate"],
        }

    figures = []
    for level in levels:
        figure = level_figures(level)
        if "base_orders" in level:
            figure["alongside"] = level_figures(level, "base")
            figure["growth"] = growth_of(figure, figure["alongside"])
            figure["growth_worst"] = max(v for k, v in figure["growth"].items()
                                         if "info" not in k)
        figures.append(figure)
    first, last = levels[0], figures[-1]
    base = figures[0]
    echo_sat = first["ack"]["saturation"]["echo"]
    echo_lat = first["ack"]["latency"]["echo"]
    floor_sat = first["ack"]["saturation"]["floor"]
    floor_lat = first["ack"]["latency"]["floor"]
    noop = first["e2e"]["noop"]
    growth: dict[str, float] = last.get("growth", {})
    raw = {
        "ack_rate": base["ack_rate"],
        "echo_rate": med([r["rate"] for r in echo_sat]),
        "receiver_cpu_share": med([r["server_cpu_share"]
                                   for r in first["ack"]["saturation"]["receiver"]]),
        "echo_cpu_share": med([r["server_cpu_share"] for r in echo_sat]),
        "generator_cpu_share": med([r["generator_cpu_share"]
                                    for r in first["ack"]["saturation"]["receiver"]]),
        "echo_generator_cpu_share": med([r["generator_cpu_share"] for r in echo_sat]),
        "latency": {str(rate): {f"{q}_ms": base[f"{q}_ms_{rate}"] for q in ("p50", "p99", "p999")}
                    for rate in RATES},
        "echo_latency": {str(rate): {k: med([r[k] for r in echo_lat[rate]])
                                     for k in ("p50_ms", "p99_ms", "p999_ms")} for rate in RATES},
        "echo_stalls": sum(r["stalls"] for rate in RATES for r in echo_lat[rate]),
        # The smallest durable receiver (bench/floor.py): group commit of the body alone.
        "floor_rate": med([r["rate"] for r in floor_sat]),
        "floor_cpu_share": med([r["server_cpu_share"] for r in floor_sat]),
        "floor_latency": {str(rate): {k: med([r[k] for r in floor_lat[rate]])
                                      for k in ("p50_ms", "p99_ms", "p999_ms")}
                          for rate in RATES},
        "e2e_n": plan.e2e_n, "e2e_rate": base["e2e_rate"],
        "noop_rate": med([r["rate"] for r in noop]),
        "growth": growth, "levels": figures, "rss": rss, "runs": levels,
    }
    doc: dict[str, Any] = {
        "ack_ratio": raw["ack_rate"] / raw["echo_rate"],
        "floor_ratio": raw["floor_rate"] / raw["echo_rate"],
        "ack_ratio_to_floor": raw["ack_rate"] / raw["floor_rate"],
        "ack_p99_ms_500": base["p99_ms_500"], "ack_p999_ms_500": base["p999_ms_500"],
        "ack_p99_ms_1000": base["p99_ms_1000"], "ack_p999_ms_1000": base["p999_ms_1000"],
        "e2e_ratio": raw["e2e_rate"] / raw["noop_rate"],
        "growth_ratio": last.get("growth_worst", float("nan")),
        "growth_levels": [f["orders"] for f in figures],
        "rss_receiver_mb": rss.get("receiver", 0.0), "rss_worker_mb": rss.get("worker", 0.0),
        "database": backends.database, "database_version": backends.server_version(),
        "database_source": backends.database_source, "redis": backends.redis_source,
        "quick": quick, "reps": plan.reps, "growth_reps": plan.growth_reps,
        "latency_reps": plan.latency_reps,
        "plan": asdict(plan), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(), "raw": raw,
    }
    doc["targets"] = verdicts(doc)
    return doc
