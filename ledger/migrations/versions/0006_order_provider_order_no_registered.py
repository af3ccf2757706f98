"""orders.provider_order_no_registered: the registration itself named the provider's order no

So a repeat that leaves it out is told from one that leaves out what a callback filled in
(CONTRACT §3: 409 when a repeat differs).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN with a constant default: SQLite's batch mode would copy the table and
    # drop the old one, which the foreign keys of existing rows refuse.
    op.add_column("orders", sa.Column("provider_order_no_registered", sa.Boolean(),
                                      server_default=sa.false(), nullable=False))
    # An order registered with a number and with no history yet can only have had it from its
    # registration. Where a callback or poll reached the order, it may have filled the number
    # in: left unmarked, so a repeat without it stays a 200, as it was.
    orders = sa.table("orders", sa.column("id"), sa.column("registered", sa.Boolean()),
                      sa.column("provider_order_no"),
                      sa.column("provider_order_no_registered", sa.Boolean()))
    events = sa.table("order_events", sa.column("order_id"))
    op.execute(
        orders.update()
        .where(orders.c.registered.is_(sa.true()), orders.c.provider_order_no.is_not(None),
               ~sa.exists().where(events.c.order_id == orders.c.id))
        .values(provider_order_no_registered=sa.true())
    )


def downgrade() -> None:
    op.drop_column("orders", "provider_order_no_registered")
