"""Running the Alembic migrations that ship inside the package."""

from __future__ import annotations

import logging
from pathlib import Path

# Alembic logs seven `setup plugin alembic.*` lines at INFO as it is imported, before any work:
# start-up noise in the log of every caller (`payhook migrate`, `payhook dev`, the tests).
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

from alembic import command  # noqa: E402 - imported after the line above, which silences it
from alembic.config import Config  # noqa: E402

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic config for `database_url`, independent of the working directory."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema at `database_url` to `revision`."""
    command.upgrade(alembic_config(database_url), revision)
