"""The sandbox keeps its refunds by our refund id (`sandbox_payments.refunds`): a refund id is
refunded once, and its refund can be read back, as a real provider's can.

Revision ID: 0010_sandbox_refunds
Revises: 0009_payments
Create Date: 2026-12-06 12:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import simcharge.db

revision: str = "0010_sandbox_refunds"
down_revision: str | None = "0009_payments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sandbox_payments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "refunds", simcharge.db.JSONType, nullable=False, server_default=sa.text("'{}'")
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("sandbox_payments", schema=None) as batch_op:
        batch_op.drop_column("refunds")
