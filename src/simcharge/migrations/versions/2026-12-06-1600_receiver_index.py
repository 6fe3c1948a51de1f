"""Balance actions indexed by the line that received them: a line's TMF654 history includes the
transfers it received, which without this scans every action there is.

Revision ID: 0012_receiver_index
Revises: 0011_order_report_indexes
Create Date: 2026-12-06 16:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012_receiver_index"
down_revision: str | None = "0011_order_report_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_balance_actions_receiver_line_id",
        "balance_actions",
        ["receiver_line_id", "kind", "requested_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_balance_actions_receiver_line_id", table_name="balance_actions")
