"""Adjustments: the approver's note (`decision_note`) — why an adjustment waiting for a second
person was approved or rejected (required for a rejection on the back office's page).

Revision ID: 0025_adjustment_note
Revises: 0024_line_attached_at
Create Date: 2026-12-11 09:20:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025_adjustment_note"
down_revision: str | None = "0024_line_attached_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("adjustments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("decision_note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("adjustments", schema=None) as batch_op:
        batch_op.drop_column("decision_note")
