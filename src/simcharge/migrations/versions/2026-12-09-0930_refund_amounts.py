"""Refunds and transfers: placeholder (money helper).

Revision ID: 0022_refund_amounts
Revises: 0021_retention_more
Create Date: 2026-12-09 09:30:00+00:00
"""

from collections.abc import Sequence

revision: str = "0022_refund_amounts"
down_revision: str | None = "0021_retention_more"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
