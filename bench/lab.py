"""The processes of one bench run: payhook's receiver and worker, the references (bare aiohttp
echo, the smallest durable receiver, bare Celery no-op worker), the sandbox's provider query
APIs, and the load generator.

The receiver and the reference servers are pinned to the first core and the load generator to the
second, so the generator never takes the server's core; the workers, PostgreSQL and Redis float.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from bench.stack import PYTHON, Backends, Proc, RssWatch, cores, wait_http
from payhook.embedded import free_port
from sandbox.server import ProviderServer
from sandbox.world import SandboxWorld

_WORKER_FLAGS = ["--concurrency", "2", "--pool", "prefork", "--without-mingle",
                 "--without-gossip"]


class Lab:
    """Starts and stops the bench's processes and runs the load generator."""

    def __init__(self, workdir: Path, backends: Backends) -> None:
        self.workdir = workdir
        self.backends = backends
        self.world = SandboxWorld(workdir / "world")
        self.providers = ProviderServer(self.world).start()
        # The bench's accounts: queries are not rate-limited (the sandbox is local) and signed
        # callbacks stay valid for the whole run (they are signed before it starts).
        config = self.world.write_config(self.providers.url, workdir / "payhook.toml",
                                         query_rate_per_s=100000, timestamp_tolerance_s=86400)
        self.env = {
            **os.environ,
            "PAYHOOK_DATABASE_URL": backends.database_url,
            "PAYHOOK_REDIS_URL": backends.redis_url,
            "PAYHOOK_CONFIG": str(config),
            "PAYHOOK_QUEUE": backends.queue,
            "PAYHOOK_LOG_FORMAT": "json",
            "PAYHOOK_API_TOKEN": "bench-token",
            "PAYHOOK_SWEEP_AFTER_S": "3600",
        }
        self.noop_queue = f"{backends.queue}-noop"
        self.rss = RssWatch().start()
        all_cores = cores()
        self.server_cpu = all_cores[0]
        self.client_cpu = all_cores[-1] if len(all_cores) > 1 else None
        self.procs: dict[str, Proc] = {}

    # -- servers ----------------------------------------------------------------------------
    def start_server(self, name: str) -> int:
        """Start `receiver`, `echo` or `floor` on the server core; its port."""
        port = free_port()
        if name == "receiver":
            argv = [PYTHON, "-m", "payhook.cli", "serve", "--host", "127.0.0.1",
                    "--port", str(port)]
        else:
            argv = [PYTHON, "-m", f"bench.{name}", str(port)]
        proc = Proc(name, argv, self.env, self.workdir, cpu=self.server_cpu)
        self.procs[name] = proc
        wait_http(f"http://127.0.0.1:{port}/healthz")
        self.rss.watch(name, proc.pid)
        return port

    def start_workers(self, names: list[str]) -> None:
        """`worker` (payhook) and/or `noop_worker` (the reference), with the same flags; returns
        once each has logged that it is ready."""
        marks: dict[str, int] = {}
        for name in names:
            log = self.workdir / f"{name}.log"
            marks[name] = log.stat().st_size if log.exists() else 0
            if name == "worker":
                argv = [PYTHON, "-m", "payhook.cli", "worker", *_WORKER_FLAGS,
                        "--hostname", f"bench-{self.backends.token}@%h"]
                env = self.env
            else:
                argv = [PYTHON, "-m", "celery", "-A", "bench.noop", "worker", "--loglevel=INFO",
                        "--task-events", *_WORKER_FLAGS,
                        "--hostname", f"bench-noop-{self.backends.token}@%h"]
                env = {**self.env, "PAYHOOK_QUEUE": self.noop_queue}
            self.procs[name] = Proc(name, argv, env, self.workdir)
        for name in names:
            self._wait_ready(name, marks[name])
            self.rss.watch(name, self.procs[name].pid)

    def _wait_ready(self, name: str, log_offset: int) -> None:
        log, proc = self.workdir / f"{name}.log", self.procs[name]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with log.open("rb") as fh:
                fh.seek(log_offset)
                if b" ready." in fh.read():
                    return
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{name} exited; see {log}")
            time.sleep(0.1)
        raise RuntimeError(f"{name} not ready after 60s; see {log}")

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            self.rss.forget(proc.pid)
            proc.stop()

    def cpu_seconds(self, name: str) -> float:
        """User+system CPU seconds used so far by the (single-process) server `name`."""
        with open(f"/proc/{self.procs[name].pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # -- the load generator -----------------------------------------------------------------
    def load(self, port: int, requests: Path, *, pinned: bool = True,
             **spec: Any) -> dict[str, Any]:
        """Run one load-generator process to completion; its result."""
        spec_path = self.workdir / "loadgen-spec.json"
        out_path = self.workdir / "loadgen-out.json"
        out_path.unlink(missing_ok=True)
        spec_path.write_text(json.dumps({"host": "127.0.0.1", "port": port,
                                         "requests": str(requests), **spec}))
        return self._run_to_json("loadgen", ["bench.loadgen", str(spec_path)], self.env,
                                 out_path, cpu=self.client_cpu if pinned else None)

    def publish_noop(self, count: int) -> dict[str, Any]:
        """Publish `count` no-op tasks from a separate process, as fast as it can."""
        env = {**self.env, "PAYHOOK_QUEUE": self.noop_queue}
        return self._run_to_json("publisher", ["bench.publish", str(count)], env,
                                 self.workdir / "publish-out.json")

    def _run_to_json(self, name: str, module_args: list[str], env: dict[str, str],
                     out_path: Path, cpu: int | None = None) -> dict[str, Any]:
        """Run `python -m MODULE ARGS… OUT_PATH` to completion; the JSON it wrote there."""
        proc = Proc(name, [PYTHON, "-m", *module_args, str(out_path)], env, self.workdir,
                    cpu=cpu)
        try:
            code = proc.popen.wait()
        finally:  # also when the bench itself is stopped: never leave the child running
            proc.stop()
        if code != 0:
            raise RuntimeError(f"{name} failed ({code}); see {self.workdir}/{name}.log")
        result: dict[str, Any] = json.loads(out_path.read_text())
        return result

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        self.rss.stop()
        self.providers.stop()
