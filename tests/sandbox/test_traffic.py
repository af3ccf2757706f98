"""The traffic generator against real stacks: every generated order ends where it says."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.migrate import upgrade
from sandbox.check import Report, run_for
from sandbox.server import ProviderServer
from sandbox.traffic import FaultMix, Generator
from sandbox.world import SandboxWorld
from tests.conftest import queue_name
from tests.harness import API_TOKEN, Stack


def _run(stack: Stack, seconds: float, mix: FaultMix, seed: int) -> Report:
    gen = Generator(stack.world, stack.url, API_TOKEN, rate=12, mix=mix, seed=seed)
    return asyncio.run(run_for(gen, seconds, settle_timeout_s=45))


def _assert_clean(report: Report) -> None:
    assert (report.lost, report.double_applied) == (0, 0), report.problems
    assert report.settled
    assert report.generated > 0
    assert report.states["applied"] > 0
    assert report.states["duplicate"] > 0
    assert report.states["rejected"] > 0


def test_generator_against_session_stack(stack: Stack) -> None:
    """Every fault but lost callbacks (this stack's beat never reconciles) ends as expected."""
    report = _run(stack, 5, FaultMix(lost=0, duplicate=0.15, forged=0.1, replayed=0.1), seed=7)
    _assert_clean(report)
    assert report.states["stale"] + report.states["duplicate"] > 0
    assert report.last_line().startswith(f"sandbox: generated={report.generated} ")


@pytest.fixture(scope="module")
def reconciling_stack(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, world: SandboxWorld,
    provider_server: ProviderServer,
) -> Iterator[Stack]:
    """A stack of its own (fresh database, so ledger sums are ours) whose beat reconciles
    every 2 s."""
    workdir: Path = tmp_path_factory.mktemp("reconciling")
    database_url = f"sqlite:///{workdir / 'payhook.db'}"
    upgrade(database_url)
    running = Stack(workdir, database_url, redis_url, world, provider_server.url,
                    queue=queue_name("payhook-sbx"),
                    PAYHOOK_RECONCILE_INTERVAL_S="2")
    running.start()
    yield running
    running.stop()


def test_lost_callbacks_are_resolved_by_polling(reconciling_stack: Stack) -> None:
    """With beat reconciling, lost-callback orders end resolved by polling, nothing lost."""
    report = _run(reconciling_stack, 6, FaultMix(lost=0.2), seed=11)
    _assert_clean(report)
    assert report.lost_callbacks > 0
    assert report.resolved_by_poll >= report.lost_callbacks
    assert report.ledger == "receipts match"
