"""The providers file (CONTRACT §2): validated accounts; errors name file, table and key."""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ledger.apply import Incoming
from ledger.models import Callback, Order, ProviderEventSeen, ReconcileRun, column_width
from ledger.status import Kind, Status
from providers import registry
from providers.base import AccountConfig, Provider, ProviderEvent, Trust
from providers.errors import ConfigError
from reconcile.sms import SmsConfig


@dataclass(frozen=True)
class Account:
    """One configured provider account, with its adapter."""

    provider: Provider
    name: str
    config: AccountConfig

    @property
    def key(self) -> str:
        return f"{self.provider.name}/{self.name}"

    @property
    def trust(self) -> Trust:
        return self.config.trust or self.provider.default_trust

    def incoming(self, event: ProviderEvent, source: str, **extra: Any) -> Incoming:
        """This account's provider event in the ledger's terms (`extra`: callback id, …)."""
        return Incoming(
            provider=self.provider.name,
            account=self.name,
            merchant_order_no=event.merchant_order_no,
            event_id=event.event_id,
            provider_status=event.provider_status,
            status=Status(event.status.value),
            amount=event.amount,
            currency=event.currency,
            source=source,
            provider_order_no=event.provider_order_no,
            paid_at=event.paid_at,
            kind=Kind(event.kind.value) if event.kind is not None else None,
            flags=event.flags,
            **extra,
        )


@dataclass(frozen=True)
class Accounts:
    """Every configured account, by (provider, account name)."""

    by_key: dict[tuple[str, str], Account] = field(default_factory=dict)
    sms: SmsConfig | None = None
    source: Path | None = None

    def get(self, provider: str, account: str = "default") -> Account | None:
        return self.by_key.get((provider, account))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.by_key.values())

    def unknown_in_scope(self, provider: str | None, account: str | None) -> tuple[str, str] | None:
        """The filter of a reconciliation pass that names nothing configured, and why, as
        (field, reason); None when both are known. A typo would otherwise give a clean, empty
        report while the pending orders it meant went unqueried."""
        if provider is not None and provider not in {p for p, _ in self.by_key}:
            configured = ", ".join(sorted({p for p, _ in self.by_key})) or "none"
            return "provider", f"unknown provider {provider} (configured: {configured})"
        names = sorted(n for p, n in self.by_key if provider is None or p == provider)
        if account is not None and account not in names:
            owner = provider or "any provider"
            return "account", (f"unknown account {account} for {owner} "
                               f"(configured: {', '.join(dict.fromkeys(names)) or 'none'})")
        return None


# An account name is stored in these columns: PostgreSQL refuses a longer one on every insert,
# and the inbox writes a group of requests in one statement, so one callback for such an
# account would fail every other request of its group (503). Read from the models, so a
# migration that widens the columns widens the check.
NAME_WIDTH = min(
    column_width(c)
    for c in (Callback.account, Order.account, ProviderEventSeen.account, ReconcileRun.account)
)
# What a name may be made of: the route `/callbacks/{provider}/{account}` takes it as it is (no
# percent-encoding, no slash), and a leading letter or digit keeps out `.` and `..`, which
# HTTP clients resolve away before the path is sent.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _check_name(path: Path, provider: str, name: str) -> None:
    shown = name if _NAME.fullmatch(name) else json.dumps(name)  # as TOML would quote it
    where = f"{path}: [providers.{provider}.{shown}]"
    if len(name) > NAME_WIDTH:
        raise ConfigError(
            f"{where} account name is {len(name)} characters long; at most {NAME_WIDTH}"
        )
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{where} account name must be letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )


def _resolve_env(value: Any, where: str) -> Any:
    """Replace `env:NAME` strings (at any depth) by the environment variable's value."""
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return os.environ[name]
    if isinstance(value, dict):
        return {k: _resolve_env(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, where) for v in value]
    return value


def _validation_error(path: Path, table: str, exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(table)"
    return ConfigError(f"{path}: [{table}] {key}: {first['msg']}")


def _account(path: Path, provider: str, name: str, table: Any) -> Account:
    where = f"providers.{provider}.{name}"
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{where}] must be a table")
    adapter = registry.get(provider)
    resolved = {k: _resolve_env(v, f"{path}: [{where}] {k}") for k, v in table.items()}
    try:
        config = adapter.account_model.model_validate(resolved, context={"base_dir": path.parent})
    except ValidationError as exc:
        raise _validation_error(path, where, exc) from exc
    return Account(adapter, name, config)


# What a providers file may hold: an unknown table is a typo to refuse, not to ignore (a
# `[notify.sssms]` would start with no SMS alerts, and say nothing).
_TABLES = ("notify", "providers")
_NOTIFIERS = ("sssms88",)


def _table(path: Path, where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{where}] must be a table")
    return value


def _check_outline(path: Path, data: dict[str, Any]) -> None:
    """Refuse a top-level key or table, or a `[notify.*]` table, that nothing reads."""
    for key, value in data.items():
        if key in _TABLES:
            _table(path, key, value)
        elif isinstance(value, dict):
            raise ConfigError(f"{path}: [{key}] unknown table (known: {', '.join(_TABLES)})")
        else:
            raise ConfigError(
                f"{path}: {key}: unknown key at the top level (known: {', '.join(_TABLES)})"
            )
    for name, value in data.get("notify", {}).items():
        if name not in _NOTIFIERS:
            raise ConfigError(
                f"{path}: [notify.{name}] unknown notifier (known: {', '.join(_NOTIFIERS)})"
            )
        _table(path, f"notify.{name}", value)


def _sms(path: Path, data: dict[str, Any]) -> SmsConfig | None:
    if "sssms88" not in data.get("notify", {}):
        return None
    where = "notify.sssms88"
    table = _resolve_env(data["notify"]["sssms88"], f"{path}: [{where}]")
    try:
        return SmsConfig.model_validate(table)
    except ValidationError as exc:
        raise _validation_error(path, where, exc) from exc


def load_accounts(path: Path, *, required: bool = False) -> Accounts:
    """Parse and validate the providers file; a missing file means no accounts, unless the
    caller (a receiver or a worker, useless without them) says they are `required`."""
    if not path.exists():
        if required:
            raise ConfigError(f"{path}: no such providers file (PAYHOOK_CONFIG)")
        return Accounts(source=None)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    _check_outline(path, data)
    accounts: dict[tuple[str, str], Account] = {}
    for provider, tables in data.get("providers", {}).items():
        if provider not in registry.NAMES:
            raise ConfigError(f"{path}: [providers.{provider}] unknown provider")
        if not isinstance(tables, dict):
            raise ConfigError(f"{path}: [providers.{provider}] must be a table of accounts")
        for name, table in tables.items():
            _check_name(path, provider, name)
            accounts[(provider, name)] = _account(path, provider, name, table)
    sms = _sms(path, data)
    if required and not accounts:
        raise ConfigError(f"{path}: no provider account ([providers.<provider>.<account>])")
    return Accounts(accounts, sms, path)
