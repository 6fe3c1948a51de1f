"""Orders indexed by when they were placed and when they were paid: the back office's reports
and order lists take a range of days out of every order there is, which without these scans the
whole table.

Revision ID: 0011_order_report_indexes
Revises: 0010_sandbox_refunds
Create Date: 2026-12-06 14:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011_order_report_indexes"
down_revision: str | None = "0010_sandbox_refunds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_orders_created_at", "orders", ["created_at"])
    op.create_index("ix_orders_paid_at", "orders", ["paid_at"])


def downgrade() -> None:
    op.drop_index("ix_orders_paid_at", table_name="orders")
    op.drop_index("ix_orders_created_at", table_name="orders")
