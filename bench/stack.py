"""The bench's private backends and processes: a throw-away database and queue, processes started
pinned to a core, and a watcher that keeps the peak RSS of each role.

On PostgreSQL the bench creates `payhook_bench_<random>` on the server named by
PAYHOOK_DATABASE_URL and drops it at the end; on Redis it uses its own queue names and deletes
their keys. Without those variables it uses a SQLite file and an embedded redis-server.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psycopg
import redis
from sqlalchemy.engine import make_url

from ledger.migrate import upgrade
from payhook.embedded import EmbeddedRedis

PYTHON = sys.executable


class Backends:
    """The database and Redis the bench runs against, created and removed by it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.token = secrets.token_hex(4)
        self.queue = f"payhook-bench-{self.token}"
        self._server_url: str | None = None
        self._dbname = f"payhook_bench_{self.token}"
        self._embedded: EmbeddedRedis | None = None
        given_db = os.environ.get("PAYHOOK_DATABASE_URL", "")
        if given_db and make_url(given_db).get_backend_name() == "postgresql":
            self._server_url = given_db
            self.database_url = make_url(given_db).set(database=self._dbname).render_as_string(
                hide_password=False)
            self.database = "postgresql"
        else:
            self.database_url = f"sqlite:///{workdir / 'bench.db'}"
            self.database = "sqlite"
        self.redis_url = os.environ.get("PAYHOOK_REDIS_URL", "")
        self.redis_source = "PAYHOOK_REDIS_URL" if self.redis_url else "embedded"
        self.database_source = "PAYHOOK_DATABASE_URL" if self._server_url else "embedded"

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        assert self._server_url is not None
        url = make_url(self._server_url).set(drivername="postgresql", database="postgres")
        return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)

    def start(self) -> Backends:
        if self._server_url is not None:
            with self._admin() as conn:
                conn.execute(f'CREATE DATABASE "{self._dbname}"')
        upgrade(self.database_url)
        if not self.redis_url:
            self._embedded = EmbeddedRedis(self.workdir / "redis")
            self.redis_url = self._embedded.start()
        return self

    def describe(self) -> str:
        server = make_url(self.database_url)
        where = f"{server.host}:{server.port or 5432}" if self.database == "postgresql" else "file"
        return f"{self.database} ({self.database_source}, {where}), redis ({self.redis_source})"

    def server_version(self) -> str:
        if self._server_url is None:
            import sqlite3
            return f"SQLite {sqlite3.sqlite_version}"
        with self._admin() as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return f"PostgreSQL {row[0] if row else '?'}"

    def redis_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def clean_queue_keys(self) -> int:
        """Delete every Redis key named after this run's queues."""
        client = self.redis_client()
        try:
            keys = list(client.scan_iter(match=f"*{self.queue}*", count=1000))
            if keys:
                client.delete(*keys)
            return len(keys)
        finally:
            client.close()

    def drain_queue(self, queue: str) -> None:
        """Drop the messages waiting in `queue` (its priority lists too), keeping its bindings:
        a running publisher has cached them and would not declare them again."""
        client = self.redis_client()
        try:
            keys = [queue.encode(), *client.scan_iter(match=f"{queue}\x06\x16*", count=1000)]
            client.delete(*keys)
        finally:
            client.close()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.clean_queue_keys()
        if self._embedded is not None:
            self._embedded.stop()
        if self._server_url is not None:
            with self._admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self._dbname}" WITH (FORCE)')


class Proc:
    """One child process (and its process group), optionally pinned to one core."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path,
                 cpu: int | None = None) -> None:
        self.name = name
        prefix = ["taskset", "-c", str(cpu)] if cpu is not None and _can_pin() else []
        self._log = (logdir / f"{name}.log").open("ab")
        self.popen = subprocess.Popen(
            [*prefix, *argv], env=env, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=logdir, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 30) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()


def _can_pin() -> bool:
    return hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2


def cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(  # noqa: S310 - localhost
                url, timeout=1) as reply:
            if reply.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
    return found


def peak_rss_mb(pid: int) -> float:
    """VmHWM (the kernel's peak resident set) of one process, in MB; 0 once it is gone."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RssWatch:
    """Samples the process trees of named roles and keeps each role's largest per-process peak."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.peaks: dict[str, float] = {}
        self._roles: dict[str, int] = {}
        self._interval = interval_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, role: str, pid: int) -> None:
        with self._lock:
            self._roles[f"{role}#{pid}"] = pid

    def sample(self) -> None:
        """Take one sample now (call before stopping a watched process)."""
        with self._lock:
            roles = dict(self._roles)
        for key, pid in roles.items():
            role = key.split("#")[0]
            for child in _tree(pid):
                self.peaks[role] = max(self.peaks.get(role, 0.0), peak_rss_mb(child))

    def forget(self, pid: int) -> None:
        self.sample()
        with self._lock:
            self._roles = {k: v for k, v in self._roles.items() if v != pid}

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def start(self) -> RssWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
