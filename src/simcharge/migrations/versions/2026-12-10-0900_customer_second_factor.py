"""Customers' two-step sign-in with a passkey: the accounts that turned it on (one row each).

Revision ID: 0022_customer_second_factor
Revises: 0021_retention_more
Create Date: 2026-12-10 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import simcharge.db

revision: str = "0022_customer_second_factor"
down_revision: str | None = "0021_retention_more"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "passkey_second_factors",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("enabled_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_passkey_second_factors_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_passkey_second_factors")),
    )


def downgrade() -> None:
    op.drop_table("passkey_second_factors")
