"""A real payhook stack for tests: receiver, worker and beat as processes, the sandbox's
provider APIs on a local port, Redis and the database from the environment or embedded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert

from ledger.models import Callback
from payhook.embedded import free_port
from providers.base import HttpRequest
from sandbox.world import SandboxWorld

API_TOKEN = "test-token"


def exchange(method: str, url: str, *, body: bytes | None = None,
             headers: dict[str, str] | None = None,
             timeout: float = 10) -> tuple[int, bytes, dict[str, str]]:
    """One HTTP exchange; (status, body, headers) for any status."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310
            return reply.status, reply.read(), dict(reply.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def http(method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
    """One HTTP exchange; (status, body) for any status."""
    status, body, _ = exchange(method, url, **kwargs)
    return status, body


class Stack:
    """payhook's processes for one test session (or one test that breaks things)."""

    def __init__(self, workdir: Path, database_url: str, redis_url: str, world: SandboxWorld,
                 providers_url: str, queue: str, **env: str) -> None:
        self.workdir = workdir
        self.world = world
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = world.write_config(providers_url, workdir / "payhook.toml",
                                    stale_after_s=2, timestamp_tolerance_s=300)
        self.env = {
            **os.environ,
            "PAYHOOK_DATABASE_URL": database_url,
            "PAYHOOK_REDIS_URL": redis_url,
            "PAYHOOK_CONFIG": str(config),
            "PAYHOOK_API_TOKEN": API_TOKEN,
            "PAYHOOK_LOG_FORMAT": "json",
            "PAYHOOK_QUEUE": queue,
            "PAYHOOK_SWEEP_INTERVAL_S": "1",
            "PAYHOOK_SWEEP_AFTER_S": "4",
            "PAYHOOK_VISIBILITY_TIMEOUT_S": "30",
            "PAYHOOK_TASK_TIME_LIMIT_S": "25",
            "PAYHOOK_RECONCILE_INTERVAL_S": "3600",
            "PAYHOOK_MAX_ATTEMPTS": "3",
            "PAYHOOK_RETRY_BACKOFF_S": "1",
            **env,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, *args: str) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "payhook.cli", *args], env=self.env, stdout=log,
            stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True)

    def start(self, *, worker: bool = True, beat: bool = True) -> Stack:
        self._spawn("receiver", "serve", "--host", "127.0.0.1", "--port", str(self.port))
        if worker:
            self.start_worker()
        if beat:
            self._spawn("beat", "beat", "--schedule", str(self.workdir / "beat-schedule"))
        wait_for(lambda: http("GET", f"{self.url}/healthz")[0] == 200, 30, "receiver up")
        return self

    def start_worker(self, concurrency: int = 2, name: str = "worker") -> None:
        self._spawn(name, "worker", "--concurrency", str(concurrency), "--pool", "prefork",
                    "--without-mingle", "--without-gossip", "--hostname",
                    f"w{time.monotonic_ns()}@%h")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the process group (a prefork worker and all its children)."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, sig)
        proc.wait(30)

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in list(self.procs.items()):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            del self.procs[name]

    # -- talking to it ------------------------------------------------------------------------
    def post(self, request: HttpRequest) -> tuple[int, bytes, int | None]:
        """Send a provider's callback to the receiver: status, body, stored callback id."""
        status, body, headers = exchange(request.method, self.url + request.url,
                                         body=request.body, headers=dict(request.headers))
        callback_id = headers.get("X-Payhook-Callback-Id")
        return status, body, int(callback_id) if callback_id else None

    def api(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        status, raw = http(method, self.url + path, body=body, headers={
            "Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"})
        return status, json.loads(raw) if raw else None

    def order(self, provider: str, merchant_order_no: str) -> dict[str, Any] | None:
        status, body = self.api("GET", f"/api/orders/{provider}/{merchant_order_no}")
        return body if status == 200 else None

    def callbacks_for(self, merchant_order_no: str) -> list[dict[str, Any]]:
        _, body = self.api("GET", "/api/callbacks?limit=1000")
        return [c for c in body["callbacks"] if c["merchant_order_no"] == merchant_order_no]

    def callback(self, callback_id: int) -> dict[str, Any]:
        return self.api("GET", f"/api/callbacks/{callback_id}")[1]

    def register(self, provider: str, merchant_order_no: str, amount: str, **extra: Any) -> None:
        currency = {"opay": "NGN", "mtpay": "CNY"}.get(provider, "IDR")
        payload = {"provider": provider, "merchant_order_no": merchant_order_no,
                   "kind": "payment", "amount": amount, "currency": currency, **extra}
        status, body = self.api("POST", "/api/orders", payload)
        assert status in (200, 201), body

    def wait_final(self, ids: list[int], timeout: float = 60) -> list[dict[str, Any]]:
        """Wait until every callback id is in a final state; their records."""
        found: list[dict[str, Any]] = []

        def done() -> bool:
            found[:] = [self.callback(i) for i in ids]
            return all(c["state"] not in ("received", "processing") for c in found)

        wait_for(done, timeout, f"callbacks {ids} final")
        return found


def store(engine: Engine, requests: list[HttpRequest]) -> list[int]:
    """Put raw callbacks in the inbox as the receiver would, without enqueuing them."""
    now = datetime.now(UTC)
    rows = [{"provider": r.url.split("/")[2], "account": "default", "received_at": now,
             "remote_addr": "127.0.0.1", "headers": json.dumps(list(r.headers.items())),
             "body": r.body, "state": "received", "attempts": 0} for r in requests]
    with engine.begin() as conn:
        result = conn.execute(insert(Callback).returning(Callback.id,
                                                          sort_by_parameter_order=True), rows)
        return [int(i) for i in result.scalars()]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until true, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def fresh_database(database_url: str, workdir: Path) -> tuple[str, Callable[[], None]]:
    """A new, migrated, empty database beside `database_url`, and a function that drops it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from ledger.migrate import upgrade

    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        path = workdir / f"db-{time.monotonic_ns()}.sqlite"
        fresh = f"sqlite:///{path}"
        upgrade(fresh)
        return fresh, lambda: None
    name = f"{url.database}_t{time.monotonic_ns() % 10**9}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    fresh = url.set(database=name).render_as_string(hide_password=False)
    upgrade(fresh)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return fresh, drop
