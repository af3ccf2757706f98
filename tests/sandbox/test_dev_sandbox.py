"""`payhook dev --sandbox --duration N` from a fresh virtualenv with payhook installed from this
checkout: the run's last line and the database agree that every order ended as generated."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from payhook.embedded import free_port

REPO = Path(__file__).resolve().parents[2]
DURATION_S = 40
LAST_LINE = re.compile(
    r"^sandbox: generated=(?P<generated>\d+) applied=(?P<applied>\d+) "
    r"duplicate=(?P<duplicate>\d+) rejected=(?P<rejected>\d+) "
    r"resolved_by_poll=(?P<resolved_by_poll>\d+) lost=(?P<lost>\d+) "
    r"double_applied=(?P<double_applied>\d+)$")
_NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", ".payhook", "__pycache__", "*.egg-info",
                                     "build", ".*_cache", ".hypothesis", "results")


@pytest.fixture(scope="module")
def fresh_payhook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`payhook` installed (not editable) into a new virtualenv from a copy of the checkout
    (a copy, so the build leaves nothing in the working tree); pip's cache keeps it quick."""
    root = tmp_path_factory.mktemp("venv")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    pip = [str(root / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet",
           "--disable-pip-version-check", str(source)]
    subprocess.run(pip, check=True, timeout=600)
    return root / "venv" / "bin" / "payhook"


def _counts(stdout: str) -> dict[str, int]:
    last = stdout.strip().splitlines()[-1]
    match = LAST_LINE.match(last)
    assert match, f"last line is not the sandbox line: {last!r}"
    return {k: int(v) for k, v in match.groupdict().items()}


def _database_agrees(cwd: Path) -> None:
    """Every generated order in the SQLite file is where last-run.json says; none unfinished."""
    run = json.loads((cwd / ".payhook" / "sandbox" / "last-run.json").read_text())
    db = sqlite3.connect(cwd / ".payhook" / "payhook.db")
    try:
        assert db.execute("SELECT count(*) FROM callbacks WHERE state IN "
                          "('received', 'processing')").fetchone() == (0,)
        for order in run["orders"]:
            row = db.execute(
                "SELECT o.status, o.paid_minor, (SELECT count(*) FROM payments p "
                "WHERE p.order_id = o.id) FROM orders o WHERE o.provider = ? "
                "AND o.merchant_order_no = ?",
                (order["provider"], order["merchant_order_no"])).fetchone()
            paid = int(Decimal(order["paid"]) * 100)
            assert row == (order["status"], paid, order["payments"]), order
        unbalanced = db.execute("SELECT journal_id FROM postings GROUP BY journal_id "
                                "HAVING sum(amount_minor) != 0").fetchall()
        assert unbalanced == []
    finally:
        db.close()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_dev_sandbox_run_ends_where_generated(fresh_payhook: Path, tmp_path: Path) -> None:
    """A timed `payhook dev --sandbox` run applies, dedupes, rejects and polls, and loses or
    double-applies nothing, by its own count and by the database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYHOOK_")}
    env["PAYHOOK_LOG_FORMAT"] = "json"
    done = subprocess.run(
        [str(fresh_payhook), "dev", "--sandbox", "--duration", str(DURATION_S),
         "--port", str(free_port()), "--rate", "15"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    counts = _counts(done.stdout)
    assert counts["lost"] == 0, done.stdout[-3000:]
    assert counts["double_applied"] == 0, done.stdout[-3000:]
    assert counts["generated"] > 0
    assert counts["applied"] > 0
    assert counts["rejected"] > 0
    assert counts["duplicate"] > 0
    assert counts["resolved_by_poll"] > 0
    _database_agrees(tmp_path)
