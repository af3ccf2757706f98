"""Operator alerts by SMS: one SMS per incident across every process (the claim lives in Redis),
the low-credit warning, and the message builder that keeps secrets and customer data out.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

import redis
import structlog

from providers.errors import Transient
from reconcile.outage import RedisCalls

log = structlog.get_logger(__name__)

MAX_MESSAGE_CHARS = 300
MAX_REFS = 5
_PLAIN, _PLAIN_MAX = "A-Za-z0-9_.-", 40  # the characters and the length of a plain name
NAME = re.compile(rf"^[{_PLAIN}]{{1,{_PLAIN_MAX}}}$")
_NOT_PLAIN = re.compile(rf"[^{_PLAIN}]")
REF = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")
REDACTED = "[redacted]"

_PEM = re.compile(r"-----BEGIN [A-Z ]+-----.*?(-----END [A-Z ]+-----|$)", re.DOTALL)
_KEY_VALUE = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|apikey|signature|sign|"
    r"authorization|access[_-]?key|private[_-]?key)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
)
_BEARER = re.compile(r"(?i)\bbearer\s+\S+")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
# Generated credentials are long runs of mixed-case letters and digits; order refs rarely are.
_OPAQUE = re.compile(
    r"(?<![\w|+/=-])(?=[\w|+/=-]*[a-z])(?=[\w|+/=-]*[A-Z])(?=[\w|+/=-]*\d)[\w|+/=-]{24,}"
)
# A bare run of 7-15 digits (E.164 length) or a +country number with separators.
_PHONE = re.compile(r"(?<![\w.])\+?\d{7,15}(?![\w.])|\+\d[\d \-]{6,18}\d")

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _mask_digits(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = [i for i, ch in enumerate(text) if ch.isdigit()]
    keep = set(digits[-4:])
    return "".join(ch if (i in keep or not ch.isdigit()) else "*" for i, ch in enumerate(text))


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` with known secrets, credential-looking values, emails and phone numbers removed."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = _PEM.sub(REDACTED, text)
    text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _BEARER.sub(f"Bearer {REDACTED}", text)
    text = _EMAIL.sub("[email]", text)
    text = _OPAQUE.sub(REDACTED, text)
    return _PHONE.sub(_mask_digits, text)


def build_alert(
    title: str,
    *,
    provider: str | None = None,
    account: str | None = None,
    counts: Mapping[str, int] | None = None,
    refs: Sequence[str] = (),
    figures: Mapping[str, Decimal] | None = None,
) -> str:
    """An alert made only of counts, figures, provider/account names and order refs.

    Labels and refs that do not look like identifiers are refused (ValueError). Provider and
    account names come from the operator's providers file, which allows any TOML key: they are
    made plain (`plain_name`) rather than refused, so an unusual name never costs an alert. The
    result is scrubbed and cut to `MAX_MESSAGE_CHARS`.
    """
    parts = [f"payhook: {title.strip()}"]
    scope = [plain_name(value) for value in (provider, account)]
    if any(scope):
        parts.append("/".join(s for s in scope if s))
    for label, count in (counts or {}).items():
        if count < 0:
            raise ValueError(f"negative count for {label!r}")
        parts.append(f"{_name(label, 'count label')}={count}")
    for label, amount in (figures or {}).items():
        parts.append(f"{_name(label, 'figure label')}={amount}")
    if refs:
        for ref in refs:
            if not REF.match(ref):
                raise ValueError("order ref is not an identifier")
        listed = ", ".join(refs[:MAX_REFS])
        more = f" (+{len(refs) - MAX_REFS} more)" if len(refs) > MAX_REFS else ""
        parts.append(f"orders: {listed}{more}")
    text = scrub(" ".join(parts))
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def plain_name(value: str | None) -> str:
    """`value` as a plain name: other characters become `_`, and a long name is cut, its
    last kept character `~`."""
    if value is None:
        return ""
    plain = _NOT_PLAIN.sub("_", value) or "_"
    return plain if len(plain) <= _PLAIN_MAX else plain[: _PLAIN_MAX - 1] + "~"


def _name(value: str, what: str) -> str:
    if not NAME.match(value):
        raise ValueError(f"{what} is not a plain name")
    return value


class SmsSender(Protocol):
    """What the alerter needs from an SMS client (`Sssms88Client` is one)."""

    @property
    def alert_numbers(self) -> Sequence[str]: ...

    async def send(self, numbers: Sequence[str], message: str) -> None: ...

    async def credit(self) -> Decimal: ...


@dataclass(frozen=True)
class CreditCheck:
    """One credit poll: the balance, whether it is below the threshold, whether we alerted now."""

    credit: Decimal
    low: bool
    alerted: bool


class Alerter:
    """Sends each incident's SMS once, whichever process or machine notices it first."""

    def __init__(
        self,
        sender: SmsSender,
        redis_client: redis.Redis,
        prefix: str,
        numbers: Sequence[str] | None = None,
        secrets: Sequence[str] = (),
    ) -> None:
        self._sender = sender
        self._redis = redis_client
        self._prefix = prefix
        self._numbers = list(numbers if numbers is not None else sender.alert_numbers)
        self._secrets = list(secrets)
        self._release = redis_client.register_script(_RELEASE)

    def key(self, incident_key: str) -> str:
        """The Redis key that claims `incident_key`."""
        return f"{self._prefix}:alert:{incident_key}"

    async def alert(
        self, incident_key: str, message: str, ttl_s: int = 86400,
        calls: RedisCalls | None = None,
    ) -> bool:
        """Send `message` unless this incident was already alerted within `ttl_s`; True if sent.

        A failed send releases the claim (so a later pass tries again) and re-raises. Redis is
        called through `calls` (a pass's, so an outage it found fails the claim at once).
        """
        key, claim, calls = self.key(incident_key), uuid.uuid4().hex, calls or RedisCalls()
        try:
            claimed = await calls.run(self._redis.set, key, claim, nx=True, ex=ttl_s)
        except redis.RedisError as exc:
            raise Transient(f"alert claim: {type(exc).__name__}") from exc
        if not claimed:
            log.info("alert_suppressed", incident=incident_key)
            return False
        try:
            await self._sender.send(self._numbers, scrub(message, self._secrets))
        except BaseException:
            log.warning("alert_send_failed", incident=incident_key)
            self._release_claim(key, claim, calls)
            raise
        log.info("alert_sent", incident=incident_key, recipients=len(self._numbers))
        return True

    def _release_claim(self, key: str, claim: str, calls: RedisCalls) -> None:
        # Synchronous on purpose: this also runs while being cancelled. Deletes only our own
        # claim, so a claim that expired and was taken by another process is left alone.
        try:
            calls.call(self._release, keys=[key], args=[claim])
        except redis.RedisError as exc:
            log.warning("alert_release_failed", redis_key=key, error=type(exc).__name__)

    async def check_credit(
        self, low_credit: Decimal, *, now: datetime | None = None,
        calls: RedisCalls | None = None,
    ) -> CreditCheck:
        """Poll the SMS credit; below `low_credit`, alert at most once per UTC day (see alert
        for `calls`)."""
        credit = await self._sender.credit()
        if credit >= low_credit:
            return CreditCheck(credit=credit, low=False, alerted=False)
        day = (now or datetime.now(UTC)).astimezone(UTC).date().isoformat()
        message = build_alert("SMS credit low", figures={"credit": credit, "threshold": low_credit})
        sent = await self.alert(f"low_credit:{day}", message, ttl_s=2 * 86400, calls=calls)
        return CreditCheck(credit=credit, low=True, alerted=sent)
