"""The package arrows of STYLE.md hold: providers and ledger import no other package of ours."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"payhook", "ingest", "workers", "ledger", "providers", "reconcile", "sandbox", "bench"}
ALLOWED = {
    "providers": {"providers"},
    "ledger": {"ledger"},
    "ingest": {"ingest", "ledger", "payhook"},
    "workers": {"workers", "providers", "ledger", "reconcile", "payhook"},
    "reconcile": {"reconcile", "providers", "ledger", "payhook"},
}


def imported_packages(package: str) -> dict[str, set[str]]:
    """Our top-level packages each module of `package` imports, by module path."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names & OURS
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    """No module imports a package its layer may not depend on (and none imports sandbox)."""
    for module, names in imported_packages(package).items():
        assert names <= ALLOWED[package], f"{module} imports {names - ALLOWED[package]}"
