"""The read/admin API under /api: bearer token; with no token configured, 503, never open."""

from __future__ import annotations

from aiohttp import web

from ingest.api.callbacks import get_callback, get_callbacks, replay_callback
from ingest.api.common import Handler, authorized, in_thread
from ingest.api.orders import get_balances, get_order, post_order
from ingest.api.runs import get_reconcile_run, post_reconcile

__all__ = ["add_routes", "in_thread"]


def add_routes(app: web.Application) -> None:
    """The /api routes, each behind the bearer token."""
    routes: list[tuple[str, str, Handler]] = [
        ("POST", "/api/orders", post_order),
        ("GET", "/api/orders/{provider}/{merchant_order_no}", get_order),
        ("GET", "/api/callbacks", get_callbacks),
        ("GET", "/api/callbacks/{id}", get_callback),
        ("POST", "/api/callbacks/{id}/replay", replay_callback),
        ("POST", "/api/reconcile", post_reconcile),
        ("GET", "/api/reconcile/runs/{id}", get_reconcile_run),
        ("GET", "/api/ledger/balances", get_balances),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, authorized(handler))

