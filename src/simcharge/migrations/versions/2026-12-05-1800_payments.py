"""Payments: provider events kept as delivered (body and signature headers) with any dispute;
closed payments stay due for a late check (the due index covers every payment with a next
check, not only pending ones).

Revision ID: 0009_payments
Revises: 0008_backoffice
Create Date: 2026-12-05 13:47:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import simcharge.db

revision: str = "0009_payments"
down_revision: str | None = "0008_backoffice"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("provider_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("body", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("headers", simcharge.db.JSONType, nullable=True))
        batch_op.add_column(sa.Column("dispute", simcharge.db.JSONType, nullable=True))
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_payments_due",
            postgresql_where=sa.text("state = 'pending'"),
            sqlite_where=sa.text("state = 'pending'"),
        )
        batch_op.create_index(
            "ix_payments_due",
            ["next_check_at"],
            unique=False,
            postgresql_where=sa.text("next_check_at IS NOT NULL"),
            sqlite_where=sa.text("next_check_at IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_payments_due",
            postgresql_where=sa.text("next_check_at IS NOT NULL"),
            sqlite_where=sa.text("next_check_at IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_payments_due",
            ["next_check_at"],
            unique=False,
            postgresql_where=sa.text("state = 'pending'"),
            sqlite_where=sa.text("state = 'pending'"),
        )
    with op.batch_alter_table("provider_events", schema=None) as batch_op:
        batch_op.drop_column("dispute")
        batch_op.drop_column("headers")
        batch_op.drop_column("body")
