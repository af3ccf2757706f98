"""How much a benchmark run measures: the full plan, the `--quick` one, and the offered rates
of the open-model latency runs."""

from __future__ import annotations

from dataclasses import dataclass

RATES = (500, 1000)


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run, or `--quick` (the same things, smaller and fewer)."""

    levels: tuple[int, ...]
    reps: int
    growth_reps: int
    latency_reps: int  # at every level: a tail is decided by a few disk stalls, so more runs
    saturation_s: float
    latency_s: float
    e2e_n: int
    floor_latency: bool  # the smallest durable receiver's latency too, not only its saturation


FULL = Plan(levels=(10_000, 100_000, 1_000_000), reps=3, growth_reps=2, latency_reps=5,
            saturation_s=5, latency_s=10, e2e_n=20_000, floor_latency=True)
QUICK = Plan(levels=(1_000, 50_000), reps=2, growth_reps=2, latency_reps=3,
             saturation_s=2, latency_s=3, e2e_n=1_500, floor_latency=False)
