"""The providers payhook knows, by the name used in routes and the providers file."""

from __future__ import annotations

from functools import cache
from importlib import import_module

from providers.base import Provider

_MODULES = {
    "opay": ("providers.opay", "OPay"),
    "monetapay": ("providers.monetapay", "MonetaPay"),
    "otgpay": ("providers.otgpay", "OTGPay"),
    "mtpay": ("providers.mtpay", "MTPay"),
}
NAMES = tuple(_MODULES)


@cache
def get(name: str) -> Provider:
    """The adapter for `name`; KeyError if payhook has none."""
    module, cls = _MODULES[name]
    adapter: Provider = getattr(import_module(module), cls)()
    return adapter
