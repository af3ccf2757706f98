"""Alembic environment: the URL comes from the caller (payhook migrate), never from a file."""

from __future__ import annotations

from alembic import context

from ledger.db import make_engine
from ledger.models import Base

config = context.config
url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("no database URL: run migrations through `payhook migrate`")
engine = make_engine(str(url))
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
