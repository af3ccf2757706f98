"""How `payhook dev`'s children and `payhook migrate` log: CONTRACT §2's default format (JSON
when not a TTY) and no start-up noise from Alembic's plugin set-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from payhook.dev import Stack, dev_environment
from payhook.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _run_migrate(env: dict[str, str], logs: Path) -> list[str]:
    """`payhook migrate` as `payhook dev` starts a child; the lines of its log file."""
    stack = Stack(env, logs=logs)
    stack.spawn("migrate", "migrate")
    deadline = time.monotonic() + 60
    while stack.dead() is None:
        assert time.monotonic() < deadline, "migrate did not finish"
        time.sleep(0.1)
    assert stack.children[0][1].returncode == 0, (logs / "migrate.log").read_text()
    return (logs / "migrate.log").read_text().splitlines()


@pytest.mark.parametrize("explicit", [None, "console"])
def test_dev_children_follow_the_log_format_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, explicit: str | None,
) -> None:
    """Without PAYHOOK_LOG_FORMAT, a child whose logs go to a file (`dev --sandbox`'s
    `.payhook/logs/*.log`) writes JSON lines, as any payhook process not on a TTY does; a
    format the operator set is passed on as it is."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PAYHOOK_LOG_FORMAT", raising=False)
    if explicit is not None:
        monkeypatch.setenv("PAYHOOK_LOG_FORMAT", explicit)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'dev.db'}")
    env = dev_environment(settings, "redis://127.0.0.1:1/0", tmp_path / "payhook.toml")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    lines = [line for line in _run_migrate(env, tmp_path / "logs")
             if "Running upgrade" in line]
    assert lines
    if explicit is None:
        assert all(json.loads(line)["logger"] == "alembic.runtime.migration" for line in lines)
    else:
        assert not any(line.startswith("{") for line in lines)


def test_migrate_logs_no_alembic_plugin_setup(tmp_path: Path) -> None:
    """`payhook migrate` logs its upgrades, not the seven `setup plugin alembic.*` lines
    Alembic logs at INFO before them (`payhook dev` silences them the same way)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYHOOK_")}
    env.update(PAYHOOK_DATABASE_URL=f"sqlite:///{tmp_path / 'm.db'}", PAYHOOK_LOG_FORMAT="json",
               PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "payhook.cli", "migrate"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60, check=True)
    assert "Running upgrade" in done.stderr
    assert "setup plugin" not in done.stderr
    assert "migrated" in done.stdout
