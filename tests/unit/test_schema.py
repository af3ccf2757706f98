"""The migrations and the models describe one schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ledger.db import make_engine
from ledger.models import Base


def test_the_migrated_schema_is_the_one_the_models_describe(database_url: str) -> None:
    """Migrated to head, the database has exactly the tables, columns, types and indexes of
    `Base.metadata`: a model changed without its migration (or the reverse) fails here."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
