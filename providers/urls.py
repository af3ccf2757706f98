"""Base URLs of the services payhook queries (providers, the SMS gateway), checked at start-up."""

from __future__ import annotations

from urllib.parse import urlsplit

_FORM = "must be an absolute http:// or https:// URL with a host, such as https://api.example"


def base_url(value: str) -> str:
    """`value` without its trailing `/`, if it is an absolute http(s) URL with a host: request
    paths are appended to it. Anything else (`payapi`, a host without a scheme) would be
    found only at the first status query, after start-up had passed; the message never
    quotes the value (it may carry credentials)."""
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - parsing the port is the check: "host:x" raises ValueError
    except ValueError:
        raise ValueError(_FORM) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(_FORM)
    if parts.query or parts.fragment:
        raise ValueError("must have no query (?…) or fragment (#…): request paths follow it")
    return value.rstrip("/")
