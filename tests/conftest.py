"""Session fixtures: the database and Redis (from the environment, else embedded), the
sandbox providers, and one running payhook stack."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import hypothesis  # noqa: F401 - imported early: its lazy import at session end hits a CPython
import pytest  # 3.11.7 ast bug ("AST constructor recursion depth mismatch") under pytest
import redis
import structlog

from ledger.migrate import upgrade
from payhook.embedded import EmbeddedRedis
from sandbox.server import ProviderServer
from sandbox.world import SandboxWorld
from tests.harness import Stack


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """PAYHOOK_DATABASE_URL if set (CI: PostgreSQL), else a fresh SQLite file; migrated."""
    url = os.environ.get("PAYHOOK_DATABASE_URL") or (
        f"sqlite:///{tmp_path_factory.mktemp('db') / 'payhook.db'}"
    )
    upgrade(url)
    return url


QUEUES: list[str] = []  # every queue this session made; their keys are deleted at its end


def queue_name(prefix: str) -> str:
    """A queue (and Redis key prefix) of this session's own."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    QUEUES.append(name)
    return name


def _delete_queues(url: str) -> None:
    client = redis.Redis.from_url(url)
    for name in QUEUES:
        keys = [name, *client.scan_iter(f"{name}:*"), *client.scan_iter(f"_kombu.binding*.{name}"),
                *client.scan_iter(f"_kombu.binding*.{name}:*")]
        if keys:
            client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """PAYHOOK_REDIS_URL if set (this session's keys are deleted at its end), else a
    redis-server started for this session."""
    if url := os.environ.get("PAYHOOK_REDIS_URL"):
        yield url
        _delete_queues(url)
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> SandboxWorld:
    return SandboxWorld(tmp_path_factory.mktemp("sandbox"))


@pytest.fixture(scope="session")
def provider_server(world: SandboxWorld) -> Iterator[ProviderServer]:
    server = ProviderServer(world).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str,
    world: SandboxWorld, provider_server: ProviderServer,
) -> Iterator[Stack]:
    """Receiver, worker and beat, running for the whole session on their own queue."""
    running = Stack(tmp_path_factory.mktemp("stack"), database_url, redis_url, world,
                    provider_server.url, queue=queue_name("payhook-test"))
    running.start()
    yield running
    running.stop()


def unique(prefix: str = "M") -> str:
    """A merchant order number no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:12].upper()}"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(autouse=True)
def kept_logging() -> Iterator[None]:
    """The logging set-up as it was, restored after every test: `payhook.logs.configure`, which
    `payhook.cli.main` calls (CLI tests call it in-process), puts the root logger's handler on
    the stderr pytest captures, closed after the test, and makes structlog cache each logger
    on first use, past the reach of a later test's `capture_logs`."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    yield
    root.handlers[:], root.level = handlers, level
    structlog.configure(**config)
